"""Benchmark commands that print numbers, side by side in one run: `end_to_end` (the real `infer` against the
hand-written loop, `naive`, at each served precision, `exports`), `profile` (where model time goes), `budgets`
(batch budgets), `batch_order` (length-aware against fixed-order batches), `ray_scaling` (the engines), and
`output_join` (one file against a directory of parts). The `benchmark` stage itself is `stages.bench`."""
