"""The paper's experiments as named studies: lists of codebook configurations (METHOD.md §2-3, §5-7).

A :class:`Config` holds only the settings that define a codebook learner; the sweep adds the shared ones
(preset, steps, model size, seed). Two studies that use the same configuration share its runs: the run
folder is named by :attr:`Config.name`, which depends on the settings alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..train.config import TrainConfig

PAPER_K = 512  # the paper's codebook size (all tables)


@dataclass(frozen=True)
class Config:
    """One codebook learner. ``grid_dims`` 1 puts the K codes on a line, 2 on the squarest 2D grid
    (32x16 for K = 512, as in the authors' code). Settings that the quantiser does not take are ignored
    (e.g. ``neighbourhood`` for EMA-VQ)."""

    label: str
    quantizer: str
    num_codes: int = PAPER_K
    neighbourhood: str = "hard"
    grid_dims: int = 2
    shrink: float = 0.1
    init_count: float = 1.0
    update_empty: bool = True

    def __post_init__(self) -> None:
        if self.grid_dims not in (1, 2):
            raise ValueError(f"{self.label}: grid_dims must be 1 or 2, got {self.grid_dims}")

    def settings(self) -> dict[str, Any]:
        """The ``kohonen-vq train`` settings of this configuration (field name -> value), only those that the
        quantiser takes (so equal learners give equal settings)."""
        applies = TrainConfig(quantizer=self.quantizer).quantizer_kwargs()
        values: dict[str, Any] = {"quantizer": self.quantizer, "num_codes": self.num_codes}
        for name in ("neighbourhood", "shrink", "init_count", "update_empty"):
            if name in applies:
                values[name] = getattr(self, name)
        # EMA-VQ and the plain gradient codebook keep their grid for display only: it does not change learning.
        if self.grid_dims == 1 and self.quantizer in ("ksom", "gradient-som"):
            values["grid"] = (self.num_codes,)
        return values

    @property
    def name(self) -> str:
        """The run folder name, e.g. ``ksom-hard-2d-tau0.1-n0_1-upd-K512`` or ``ema-n0_0-noupd-K512``."""
        s = self.settings()
        parts = [self.quantizer]
        if "neighbourhood" in s:
            parts.append(s["neighbourhood"])
        if self.quantizer in ("ksom", "gradient-som"):
            parts.append(f"{self.grid_dims}d")
        if "shrink" in s:
            parts.append(f"tau{s['shrink']:g}")
        if "init_count" in s:
            parts += [f"n0_{s['init_count']:g}", "upd" if s["update_empty"] else "noupd"]
        return "-".join([*parts, f"K{self.num_codes}"])


def _size(num_codes: int) -> str:
    return "" if num_codes == PAPER_K else f", K={num_codes}"


# The configurations the paper names, reused across studies (and by the figures).
def ema(n0: float, update_empty: bool, num_codes: int = PAPER_K) -> Config:
    """EMA-VQ with initial counts ``n0`` and update-0 on or off."""
    label = f"EMA-VQ, N0={n0:g}, {'update-0' if update_empty else 'no update-0'}" + _size(num_codes)
    return Config(label, "ema", num_codes, init_count=n0, update_empty=update_empty)


def ksom(neighbourhood: str = "hard", grid_dims: int = 2, shrink: float = 0.1, n0: float = 1.0,
         update_empty: bool = True, num_codes: int = PAPER_K) -> Config:
    """KSOM; the label names what differs from the paper's recommendation (2D hard, tau 0.1, N0 = 1, update-0)."""
    label = f"KSOM {neighbourhood} {grid_dims}D, tau={shrink:g}"
    if (n0, update_empty) != (1.0, True):
        label += f", N0={n0:g}, {'update-0' if update_empty else 'no update-0'}"
    return Config(label + _size(num_codes), "ksom", num_codes, neighbourhood, grid_dims, shrink, n0, update_empty)


EMA_TUNED = ema(1, True)  # the paper's "well-configured" EMA-VQ
KSOM_HARD = ksom("hard")  # the paper's recommended KSOM
KSOM_GAUSSIAN = ksom("gaussian")
KSIZES = (128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class Entry:
    """A configuration in a study, with the paper's CIFAR-10 numbers for it where there are any:
    (loss x1e3, steps to +10 % x1e3[, steps to +20 % x1e3]) as printed in the paper."""

    config: Config
    paper: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """A named list of configurations: one table of results."""

    name: str
    title: str
    about: str
    entries: tuple[Entry, ...]

    @property
    def configs(self) -> tuple[Config, ...]:
        return tuple(e.config for e in self.entries)


def _study(name: str, title: str, about: str, *entries: Entry | Config) -> Study:
    return Study(name, title, about, tuple(e if isinstance(e, Entry) else Entry(e) for e in entries))


STUDIES: dict[str, Study] = {s.name: s for s in (
    _study("table1", "Table 1: sensitivity of EMA-VQ to N0 and update-0",
           "EMA-VQ with initial counts N0 in {0, 1}, with and without updating codes that got no vectors.",
           Entry(ema(0, False), ("148.8 ± 11.0", "13.5 ± 0.7")), Entry(ema(1, False), ("68.3 ± 0.8", "16.3 ± 1.4")),
           Entry(ema(0, True), ("52.1 ± 0.6", "6.8 ± 0.6")), Entry(EMA_TUNED, ("51.9 ± 0.2", "5.4 ± 0.5"))),
    _study("table2", "Table 2: KSOM neighbourhoods against well-configured EMA-VQ",
           "No neighbours (EMA-VQ, N0 = 1, update-0), hard and Gaussian neighbourhoods on the 2D grid, tau = 0.1.",
           Entry(EMA_TUNED, ("51.9 ± 0.2", "5.4 ± 0.5", "3.7 ± 0.5")),
           Entry(KSOM_HARD, ("52.1 ± 0.2", "5.2 ± 0.6", "2.5 ± 0.5")),
           Entry(KSOM_GAUSSIAN, ("51.8 ± 0.2", "5.2 ± 0.6", "3.0 ± 0.0"))),
    _study("table3", "Table 3: KSOM against EMA-VQ in the configurations that are sub-optimal for EMA-VQ",
           "Each pair shares N0 and update-0; KSOM is 2D hard, tau = 0.1.",
           Entry(ema(0, False), ("148.8 ± 11.0", "13.5 ± 0.7")), Entry(ksom(n0=0, update_empty=False),
                                                                      ("51.8 ± 0.2", "5.2 ± 0.6")),
           Entry(ema(1, False), ("68.3 ± 0.8", "16.3 ± 1.4")), Entry(ksom(n0=1, update_empty=False),
                                                                    ("52.1 ± 0.3", "4.8 ± 0.9")),
           Entry(ema(0, True), ("52.1 ± 0.6", "6.8 ± 0.6")), Entry(ksom(n0=0, update_empty=True),
                                                                  ("51.9 ± 0.2", "4.8 ± 0.6"))),
    _study("table4", "Table 4: ablations of the grid, the shrink step and the neighbourhood",
           "1D against 2D grids, tau in {1, 0.1, 0.01}; hard, Gaussian (Eq. 16) and the exponential kernel that "
           "the authors' code implements under the name 'gaussian' (METHOD.md §3; no paper numbers of its own).",
           Entry(ksom("hard", 1), ("52.0 ± 0.2", "5.3 ± 0.5", "3.1 ± 0.3")),
           Entry(ksom("hard", 2, 1.0), ("52.1 ± 0.4", "4.7 ± 0.7", "2.6 ± 0.5")),
           Entry(KSOM_HARD, ("52.0 ± 0.3", "4.9 ± 0.3", "2.4 ± 0.5")),
           Entry(ksom("hard", 2, 0.01), ("52.1 ± 0.3", "5.5 ± 0.7", "3.0 ± 0.0")),
           Entry(ksom("gaussian", 1), ("51.9 ± 0.4", "5.2 ± 0.4", "3.1 ± 0.3")),
           Entry(ksom("gaussian", 2, 1.0), ("51.9 ± 0.2", "5.3 ± 0.5", "3.3 ± 0.5")),
           Entry(KSOM_GAUSSIAN, ("51.8 ± 0.3", "5.1 ± 0.3", "3.1 ± 0.3")),
           Entry(ksom("gaussian", 2, 0.01), ("51.7 ± 0.2", "5.4 ± 0.5", "3.6 ± 0.5")),
           Entry(ksom("exponential", 2))),
    _study("table5", "Table 5: gradient-trained codebooks against EMA-VQ and KSOM",
           "The VQ-VAE codebook loss (gradient), SOM-VAE's neighbour term on the 2D grid (gradient SOM), "
           "well-configured EMA-VQ, KSOM 2D hard.",
           Entry(Config("gradient-trained codebook", "gradient"), ("69.4 ± 0.8", "14.3 ± 0.9")),
           Entry(Config("gradient SOM (SOM-VAE), 2D", "gradient-som"), ("51.7 ± 0.3", "7.3 ± 0.5")),
           Entry(EMA_TUNED, ("51.9 ± 0.2", "5.4 ± 0.5")), Entry(KSOM_HARD, ("52.1 ± 0.2", "5.2 ± 0.6"))),
    _study("ksize", "Beyond the paper: codebook size K",
           f"Well-configured EMA-VQ against KSOM 2D hard (tau = 0.1) for K in {{{', '.join(map(str, KSIZES))}}} "
           f"(squarest 2D grid: 16x8 ... 64x64).",
           *(c for k in KSIZES for c in (ema(1, True, k), ksom(num_codes=k)))),
    _study("smoke", "Smoke test: EMA-VQ against KSOM",
           "The two reference configurations only (well-configured EMA-VQ, KSOM 2D hard): a quick check of the "
           "sweep machinery.", EMA_TUNED, KSOM_HARD),
)}

# "all" runs the paper's studies and ksize; smoke is only a check of the machinery.
ALL = tuple(name for name in STUDIES if name != "smoke")


def select(name: str) -> list[Study]:
    """The studies ``name`` stands for: one of ``STUDIES`` or ``"all"``."""
    if name == "all":
        return [STUDIES[n] for n in ALL]
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join([*STUDIES, 'all'])}")
    return [STUDIES[name]]
