"""What the comparison lists: its rows (variants, ensembles, rounds, each after what it is made
from) and the notes of the rows that are not plain unsupervised variants."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pipeline.config import EnsembleSpec, RoundSpec, VariantSpec


@dataclasses.dataclass(frozen=True)
class RowNote:
    """What sets a comparison row apart: `mark` beside its name, `text` under the table."""

    mark: str
    text: str


@dataclasses.dataclass(frozen=True)
class Rows:
    """What the comparison lists: train_seg's variants, ensembles and rounds."""

    variants: Mapping[str, VariantSpec]
    ensembles: Mapping[str, EnsembleSpec]
    rounds: Mapping[str, RoundSpec]


def comparison_rows(config: Rows) -> list[str]:
    """The comparison's rows: the variants, then the ensembles and rounds, each after every row
    it is made from (FDA's order: its nets, their average, the rounds, their average)."""
    made_from = {name: list(e.members) for name, e in config.ensembles.items()}
    made_from.update({name: [r.pseudo_labels] for name, r in config.rounds.items()})
    rows, pending = list(config.variants), list(made_from)
    while pending:
        ready = next(n for n in pending if all(m in rows for m in made_from[n]))
        rows.append(ready)
        pending.remove(ready)
    return rows


def row_notes(config: Rows) -> dict[str, RowNote]:
    """The notes of the rows that are not plain unsupervised variants: the semi-supervised ones
    (they saw target labels, so they must not be ranked as if they had not), the ensembles and
    the rounds (and those made from a semi-supervised row are semi-supervised too)."""
    notes: dict[str, RowNote] = {}
    semi: set[str] = set()
    for name, spec in config.variants.items():
        if spec.target_labels is not None:
            semi.add(name)
            frames = spec.target_labels.frames
            notes[name] = RowNote(
                f"semi-supervised, {frames} target labels",
                f"semi-supervised: also trained on {frames} labelled frames of "
                f"{spec.target_labels.split} (drawn with seed {spec.target_labels.seed}); it saw "
                f"target labels, so its gap closed is not comparable with the unsupervised rows'",
            )
    for name in comparison_rows(config)[len(config.variants) :]:
        if name in config.ensembles:
            sources = list(config.ensembles[name].members)
            mark = "ensemble"
            text = (
                f"FDA's multi-band transfer: the class probabilities of {', '.join(sources)} "
                f"averaged"
            )
        else:
            spec = config.rounds[name]
            sources = [spec.variant, spec.pseudo_labels]
            mark = "self-supervised round"
            text = (
                f"FDA's self-supervised round: {spec.variant}'s recipe trained again with the "
                f"pseudo-labels {spec.pseudo_labels} gives {spec.split}'s frames (each class's "
                f"pixels above its {spec.quantile} confidence quantile, capped at "
                f"{spec.max_threshold})"
            )
        from_semi = [s for s in sources if s in semi]
        if from_semi:
            semi.add(name)
            mark += ", semi-supervised"
            text += f"; {', '.join(from_semi)} saw target labels"
        notes[name] = RowNote(mark, text)
    return notes
