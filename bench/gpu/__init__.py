"""GPU validation on one lent GPU: SST-2 at full size, a ~1B decoder through the core vs HF.

One call runs every case, each in its own process (a crash or OOM stays in its case), and
prints a table at the end:

* peak: the measured bf16 matmul rate (8192^3 torch.matmul, CUDA events, median), which the
  MFU figures divide by.
* sst2: full fine-tuning of MiniLM-L6 (bf16 copy of the packaged model) on all of GLUE
  SST-2's training rows, 3 epochs, max_length 128, evaluated on the 872 dev rows: data
  prepared by `ftpipe.data.run_prep` from configs/sst2.yaml, trained by
  `ftpipe.train.loop.train`.
* llm-z0 / llm-z2 / llm-lora: a random-init Llama-style decoder (hidden 2048, 20 layers,
  16 heads, 8 KV heads, MLP 5632, vocab 32000: 1.08B parameters), causal LM on random
  2048-token rows, bf16, through `ftpipe.train.loop.train` with DeepSpeed ZeRO-0, ZeRO-2,
  and LoRA (r=16 on every linear layer, ZeRO-0).
* llm-hf: the same model, rows, micro-batch, accumulation and sequence length through a plain
  `transformers.Trainer` (fp32 weights, bf16 autocast, its default fused AdamW).
* profile: where one fwd+bwd+AdamW step of that model spends its GPU time (torch.profiler,
  kernels grouped by kind); plain torch, for the "what holds MFU back" note.
* sst2-profile: 150 SST-2 steps of the core under cProfile (ZeRO-2, ZeRO-0) and under
  torch.profiler (GPU kernel time per step), for the "what holds SST-2 back" note.

The sst2 case first probes ZeRO-0 and ZeRO-2 (120 steps each) and runs the faster; when the
full 3-epoch schedule does not fit the time left, it caps train.max_steps at what fits and
says so in the table.

Throughput is steady state: the core's own clock (TrainResult.train_seconds, read per step off
its progress log records) between the end of the warm-up steps and the last step; the
Trainer's between the same steps (synchronised in a callback). MFU counts
6·N + 12·L·h·s FLOPs per token (N: weights of every matmul, the output layer included and the
input embedding table excluded; L layers, h hidden size, s sequence length: full attention
scores, the PaLM convention), over the measured matmul peak.

Modules: common (sizes, FLOPs, the step clock), cases/ (one function per case), runner (the
command line, one process per case, results.json) and render (the markdown section).

On the GPU machine (see docs/benchmarks.md for what to carry):

    PYTHONPATH=src python3 bench/gpu --data .carry --out $OUT [--quick] [--cases ...]

Here, to write the GPU section of docs/benchmarks.md from its results:

    .venv/bin/python bench/gpu --render results.json

`python -m bench.gpu` from the repository root works too.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
