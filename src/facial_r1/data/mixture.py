"""Several FEA JSONL files, each with its image folders and a sampling rule, as one list
of samples (the paper mixes data sets this way for GRPO).

    data_paths:    [a.jsonl, b.jsonl]
    image_folders: [imgs_a, imgs_b]      # one per file, or one for all; "x,y" = several
    data_sampling: [all, random:500]     # all | first:N | random:N

Every row is read and validated; the sampling rule is applied to the rows, and only the rows it
keeps have their images looked at, by their header: the pixels are decoded when a training
batch needs them. (`facial-r1 data validate` decodes every image of a file.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from facial_r1.data.schema import ReadReport, parse_folders, read_jsonl, with_images
from facial_r1.errors import FacialR1Error


def sample_rule(rule: str, samples: list[dict], seed: int, where: str) -> list[dict]:
    """Apply 'all', 'first:N' or 'random:N' to one file's samples.

    >>> [s["id"] for s in sample_rule("first:2", [{"id": i} for i in range(5)], 0, "f")]
    [0, 1]
    """
    kind, _, n = str(rule).partition(":")
    if kind == "all" and not n:
        return samples
    if kind in ("first", "random") and n.isdigit():
        n = int(n)
        if kind == "first":
            return samples[:n]
        return random.Random(seed).sample(samples, min(n, len(samples)))
    raise FacialR1Error(f"{where}: sampling rule {rule!r} must be all, first:N or random:N")


def load_mixture(
    data_paths: Sequence[str],
    image_folders: Sequence[str],
    data_sampling: Sequence[str] | None = None,
    seed: int = 0,
    skip_bad: bool = True,
) -> tuple[list[dict], list[str]]:
    """Read every file, resolve and check every image; return (samples, problems).

    Bad lines and unreadable images are skipped and returned as problems (never silently);
    a file that yields nothing at all is an error.
    """
    if isinstance(data_paths, str):
        data_paths = [data_paths]
    folders = [parse_folders(f) for f in (image_folders if not isinstance(image_folders, str) else [image_folders])]
    if len(folders) == 1:
        folders = folders * len(data_paths)
    if len(folders) != len(data_paths):
        raise FacialR1Error(f"{len(image_folders)} image_folders for {len(data_paths)} data_paths")
    rules = list(data_sampling) if data_sampling else ["all"] * len(data_paths)
    if len(rules) != len(data_paths):
        raise FacialR1Error(f"{len(rules)} data_sampling rules for {len(data_paths)} data_paths")
    samples, problems = [], []
    for path, dirs, rule in zip(data_paths, folders, rules, strict=True):
        report = ReadReport(str(path))
        rows = read_jsonl(path, skip_bad=skip_bad, report=report)
        good, errors = with_images(sample_rule(rule, rows, seed, str(path)), dirs, path, skip_bad, report,
                                   decode=False)
        errors = report.errors + errors
        problems += errors
        if not good:
            raise FacialR1Error(f"{path}: no usable samples" + (f" (first problem: {errors[0]})" if errors else ""))
        samples += good
    return samples, problems
