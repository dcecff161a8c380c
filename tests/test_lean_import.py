"""`import autoq` is cheap: no quantization library, no model library, no CUDA."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "torchao", "bitsandbytes", "optimum", "gguf", "diffusers", "transformers"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_import_autoq_imports_no_heavy_library() -> None:
    assert not _modules_after("import autoq") & set(HEAVY)


def test_backend_registry_imports_no_quantization_library() -> None:
    loaded = _modules_after("import autoq.backends; autoq.backends.list_precisions()")
    assert not loaded & {"torchao", "bitsandbytes", "optimum", "gguf", "diffusers"}


def test_lazy_public_names_resolve_without_touching_cuda() -> None:
    code = (
        "import autoq, torch\n"
        "assert callable(autoq.apply_precision) and callable(autoq.fingerprint)\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
