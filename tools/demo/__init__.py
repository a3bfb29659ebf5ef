"""The embedded demo: its corpus, tokenizer, training and rule labels (`python -m tools.demo` regenerates them)."""
