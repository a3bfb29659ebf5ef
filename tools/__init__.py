"""Everything `dvc repro` does not run: typed commands with a `--help` that says what they print.

`bench/`: benchmarks (end to end against a hand-written loop, the op profile, batch budgets, batch order, Ray
scaling, the output's join pass); `demo/`: the demo's regenerator (`python -m tools.demo`); `generate/`: the
generators of docs and test data (params page, support matrix, int8 remedies, plots templates, real text);
`code_deps`: each stage's code deps in dvc.yaml, from its imports; `outliers`: test models with outlier channels;
`optimum_check`: Optimum opening the export, in Optimum's own environment. No stage imports anything here.
"""
