"""The parity gate (stage `parity`): does the ONNX model compute what the torch model computes.

`cases` builds what is compared (the validation rows, tokenised as `infer` does, and a grid of shapes) and runs
both models on it; `compare` holds the criteria that judge each case (values within tolerance, label agreement
on decisive tokens, span and entity F1); `explain` says what failed, by how much, and what to change. The int8 search (`stages.quantize`) judges its
trials with the same criteria. `layers` reruns a case with every layer output exposed (`layer_runs`) and compares
each with its torch module's output; `where` says in words where a failed case parts from torch.
"""
