"""Halving ladders that ``bench/search_cost.py --ladders`` runs beside the default one.

A ladder is ``rungs@eta[+flag...]``: the rungs as fractions of the full fidelity, eta, and
flags (:data:`LADDER_FLAGS`). Its label names the rows and studies of a run, and the
verdicts read the ladder back from it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from autopeft.core.halving import rung_steps

#: Ladder flags: ``+hopeless`` sets halving.stop_hopeless; ``+oracle`` makes the surrogate
#: report a trial's final accuracy at every rung, so the rule ranks perfectly: the ceiling of
#: what better rung accuracy (more validation examples, later rungs) could save; ``+plain``
#: judges by plain MO-ASHA (ties in rung accuracy not given to the judged trial), the baseline
#: of autopeft's rule on any ladder.
LADDER_FLAGS = {
    "hopeless": "hopeless trials stopped too",
    "oracle": "the rungs seeing the final accuracy (oracle)",
    "fed": "the sampler told pruned trials' rung points",
    "plain": "plain MO-ASHA",
}


@dataclass(frozen=True)
class Ladder:
    """A halving ladder run beside the default: rungs (fractions), eta and flags."""

    rungs: tuple[float, ...]
    eta: float = 3.0
    hopeless: bool = False
    oracle: bool = False
    #: The TPE sees pruned trials as complete at their rung point (bench/fed_tpe.py).
    fed: bool = False
    #: Plain MO-ASHA's rule instead of autopeft's ties-to-the-trial.
    plain: bool = False

    @classmethod
    def parse(cls, text: str) -> Ladder:
        """``'0.125,0.5,1.0@4+hopeless'`` -> a ladder."""
        shape, *flags = text.strip().split("+")
        rungs, _, eta = shape.partition("@")
        unknown = set(flags) - set(LADDER_FLAGS)
        try:
            if unknown:
                raise ValueError
            values = tuple(float(v) for v in rungs.split(","))
            return cls(values, float(eta or 3.0), **{f: f in flags for f in LADDER_FLAGS})
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected rungs@eta[+{'|+'.join(LADDER_FLAGS)}] such as 0.125,0.5,1.0@4, "
                f"but got {text.strip()!r}"
            ) from None

    def flags(self) -> list[str]:
        """The flags set, in LADDER_FLAGS order."""
        return [f for f in LADDER_FLAGS if getattr(self, f)]

    def label(self, fidelity: int) -> str:
        """The row label (and study-name part): ``tpe-r80-160-320-e3[-hopeless][-oracle]``."""
        steps = "-".join(str(s) for s in rung_steps(fidelity, list(self.rungs)))
        return f"tpe-r{steps}-e{self.eta:g}" + "".join(f"-{f}" for f in self.flags())

    @staticmethod
    def title(label: str) -> str:
        """The verdict's name of the ladder behind ``label`` (what :meth:`label` wrote)."""
        steps, _, rest = label.removeprefix("tpe-r").partition("-e")
        eta, *flags = rest.split("-")
        also = "".join(f", {LADDER_FLAGS[f]}" for f in flags)
        return f"Halving at rungs {steps.replace('-', '/')} with eta {eta}{also}"


def parse_ladders(text: str) -> tuple[Ladder, ...]:
    """``'0.125,0.5,1.0@4;0.25,0.5,1.0@3+hopeless'`` -> ladders (separated by ``;``)."""
    return tuple(Ladder.parse(part) for part in text.split(";") if part.strip())
