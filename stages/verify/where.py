"""A failed gate's `where:` lines: the first layer output that parts from torch's, where the relative error grows most,
and what could not be compared (docs/troubleshooting.md, "parity failed: where")."""

from __future__ import annotations

from stages.graph.matmuls import HEAD_MODULE
from stages.verify.layers import LayerError, LayerPicture


def describe_divergence(picture: LayerPicture) -> str:
    """Where the case's layer outputs part from torch's, for a failed gate's message: the first beyond its tolerance,
    where the relative error grows most, and what could not be compared."""
    lines = [
        f"where: {picture.case} rerun with each layer's output exposed ({picture.runtime or 'not run'}) and compared "
        "with its torch module's output over the non-pad tokens, atol scaled to the output's size"
    ]
    divergent = picture.first_divergent
    if divergent is None:
        lines.append("no layer output is beyond its tolerance")
    else:
        before = [output.relative_error for output in picture.compared[: picture.compared.index(divergent)]]
        broken = f", {divergent.nonfinite_tokens} with NaN/Inf" if divergent.nonfinite_tokens else ""
        over = f"{divergent.tokens_over_tolerance} of {divergent.tokens} tokens"
        lines.append(
            f"first divergent layer output: {divergent.module}{layer_words(divergent)}: {over} beyond atol "
            f"{divergent.atol:.2g} + rtol {picture.rtol:g} x |torch|{broken}, max |diff| {divergent.max_abs_diff:.3g}, "
            f"relative error {divergent.relative_error:.3g}"
            + (f"; the outputs before it agree to relative error {max(before):.2g} or less" if before else "")
        )
    if growth := picture.growth():
        steps = (f"{output.module} (x{factor:.3g}, to {output.relative_error:.2g})" for output, factor in growth)
        lines.append("the relative error grows most at " + ", ".join(steps))
    if unmatched := [output for output in picture.outputs if output.unmatched]:
        lines.append(
            f"not compared ({len(unmatched)} of {len(picture.outputs)}): "
            + "; ".join(f"{output.module}: {output.unmatched}" for output in unmatched)
        )
    return "\n".join([*lines, *([picture.note] if picture.note else [])])


def layer_words(output: LayerError) -> str:
    if output.layer is not None:
        return f" (encoder layer {output.layer})"
    return " (the head)" if output.module == HEAD_MODULE else ""
