"""The adaptive runtime: serve a profile's tiers, switching as conditions change."""

from autoq.runtime._cost import TierView, predict_latency, tier_views
from autoq.runtime._dispatch import Dispatcher
from autoq.runtime._metrics import LatencyReservoir, RuntimeMetrics
from autoq.runtime._pipeline import AdaptivePipeline, is_out_of_memory
from autoq.runtime._policy import Decision, DefaultPolicy, Policy, RequestShape
from autoq.runtime._signals import ResourceMonitor, ScriptedMonitor, Signals, SystemMonitor
from autoq.runtime._worker import ProcessPipeline, WorkerError

__all__ = [
    "AdaptivePipeline",
    "Decision",
    "DefaultPolicy",
    "Dispatcher",
    "LatencyReservoir",
    "Policy",
    "ProcessPipeline",
    "RequestShape",
    "ResourceMonitor",
    "RuntimeMetrics",
    "ScriptedMonitor",
    "Signals",
    "SystemMonitor",
    "TierView",
    "WorkerError",
    "is_out_of_memory",
    "predict_latency",
    "tier_views",
]
