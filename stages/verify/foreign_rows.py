"""Gate rows made for another model: `parity.input` left at rows labelled for another task (params.yaml ships the
demo's validation rows), said in one line.

Two signs: the rows' gold labels are none of the model's entities (an error: entity F1 against them means nothing),
or the torch model itself finds next to none of their gold spans (a warning, repeated in a failed gate's explanation: such
rows judge a model on text it was not trained for, where int8 agreement measures that, not the model).
"""

from __future__ import annotations

from collections.abc import Sequence

from stages.core.errors import UserError
from stages.scoring.quality import Span
from stages.scoring.spans import entity_of

# A model made for the rows' task, even a weak one, finds more than a tenth of their gold spans (the tests' tiny
# models, taught a label per piece: 0.3; the demo model: 0.99); one made for another task, next to none.
OWN_ROWS_MIN_F1 = 0.1
OWN_ROWS = "set parity.input to your own validation rows (labelled with the model's labels, or not labelled)"


def check_gold_labels(
    gold: Sequence[Sequence[Span]], labels: Sequence[str], ignore: frozenset[str], source: str
) -> None:
    """One `UserError` when none of the rows' gold labels is one of the model's entities: the rows were labelled for
    another model. (Some unknown among known ones are annotation mistakes, named row by row by `gold_for_model`.)"""
    found = {label for spans in gold for _, _, label in spans}
    entities = {entity_of(label)[0] for label in labels} - ignore
    if found and not found & entities:
        raise UserError(
            f"parity.input = {source} was labelled for another model: its gold labels ({', '.join(sorted(found))}) "
            f"are none of this model's entities ({', '.join(sorted(entities))}); {OWN_ROWS}"
        )


def foreign_rows_note(report: dict, source: str) -> str | None:
    """The line that says the gate's rows look made for another model (the torch model's own entity F1 against their
    gold is low), or None."""
    f1 = report.get("entity_f1_torch")
    if f1 is None or f1 >= OWN_ROWS_MIN_F1:
        return None
    return (
        f"the torch model itself reaches entity F1 {f1:.3f} against the gold of parity.input = {source}: these rows look "
        f"made for another model (params.yaml ships the demo's, data/validation.parquet); {OWN_ROWS}"
    )
