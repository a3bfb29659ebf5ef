"""Scoring only what is new: rows whose scores a previous run stored are taken from the score store.

`keys` names what a score depends on (the row's text, the model's files, the params that shape outputs);
`plan` cuts blocks and batches where the content says, so that a row's neighbours, and with them its
floating-point results, do not depend on rows elsewhere in the dataset; `store` keeps the scored rows,
write-once and verified, and finds them again.
"""
