"""The adaptive runtime: serve a profile's tiers, switching as conditions change."""

from autoq.runtime._metrics import RuntimeMetrics
from autoq.runtime._pipeline import AdaptivePipeline, is_out_of_memory
from autoq.runtime._policy import Decision, DefaultPolicy, Policy, TierView
from autoq.runtime._signals import ResourceMonitor, ScriptedMonitor, Signals, SystemMonitor

__all__ = [
    "AdaptivePipeline",
    "Decision",
    "DefaultPolicy",
    "Policy",
    "ResourceMonitor",
    "RuntimeMetrics",
    "ScriptedMonitor",
    "Signals",
    "SystemMonitor",
    "TierView",
    "is_out_of_memory",
]
