"""Greedy tokens from one plain, co-located vLLM engine: the reference the cluster must match.

Run as a subprocess (vLLM wants a __main__ guard and its own process):
    python tests/integration/reference_engine.py MODEL_DIR DTYPE PROMPTS.json OUT.json
PROMPTS.json: [{"prompt": str, "max_tokens": int}, ...]; OUT.json: [[token ids], ...]
"""

import json
import os
import sys

if __name__ == "__main__":
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    model_dir, dtype, prompts_path, out_path = sys.argv[1:5]
    items = json.load(open(prompts_path))
    llm = LLM(model=model_dir, enforce_eager=True, max_model_len=2048, dtype=dtype, enable_prefix_caching=False)
    results = []
    for item in items:  # one at a time: the reference is a lone sequence on a lone engine
        out = llm.generate([item["prompt"]], SamplingParams(temperature=0, max_tokens=item["max_tokens"]), use_tqdm=False)
        results.append(list(out[0].outputs[0].token_ids))
    json.dump(results, open(out_path, "w"))
