"""What an entrant's output must be before it is scored: safetensors only, loadable without
remote code, finite."""

from __future__ import annotations

from pathlib import Path

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def check_model(folder: Path) -> tuple[str, str]:
    """Accept only a safetensors model that loads without remote code and has finite weights."""
    from safetensors import safe_open

    if not folder.is_dir() or not any(folder.iterdir()):
        return "no model", "the output folder is empty"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)]
        if pickles:
            return (
                "pickle",
                f"weights only as pickle files ({', '.join(sorted(pickles)[:3])}); only safetensors are accepted",
            )
        return "no model", "no safetensors weights in the output folder"
    if not (folder / "config.json").is_file():
        return "unloadable", "no config.json beside the weights"
    try:
        for file in weights:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                        return "nan", f"non-finite values in {name}"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the entrant's fault
        return "unloadable", f"{file.name}: {type(exc).__name__}"
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        return "unloadable", f"does not load with the Auto classes ({type(exc).__name__})"
    return "ok", ""
