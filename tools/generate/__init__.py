"""Generators of docs and test data, each rewriting one committed file: `params_doc` (docs/params.md and the comments of params.yaml), `support_matrix`
(docs/support.md), `int8_remedies` (docs/int8.md's remedy table), `plots_template` (.dvc/plots/), `real_text`
(tests/data/real_text.parquet). Tests check that the generated files are current where they can."""
