"""The embedded demo: its corpus, tokenizer, training and rule labels (`python -m stages.demo` regenerates them)."""
