"""Scaffolding for the embedded tiny model only: stand-ins for what a real VLM brings from
pretraining, switched on by a stage config's `miniature:` section.

    miniature: {vision_warmup_steps: 800, vision_warmup_faces: 8000, instruct_warmup_steps: 1000,
                guided_fraction: 0.25}

- The vision warm-start stands in for a pretrained vision tower. A randomly initialised tiny VLM
  ignores the image under plain SFT (measured: one fixed answer for every face). For `steps`
  optimizer steps only the vision tower + merger are trained, with throw-away linear heads:
  one on all visual tokens of a face (it forces features that know *where* something is, brows
  vs mouth), one on their mean (what a fresh language model's attention reads first). Targets
  depend on `objective`: "labels", the AUs (BCE) and the emotion (CE) of the run's own faces
  (never the test split) plus `extra_faces` freshly rendered ones (FACS labels a real VLM's
  pretraining has not seen: the less faithful stand-in, the one that learns); or "selfsup", no
  AU or emotion label at all: identity, pose and a grey 28 px thumbnail of freshly rendered
  faces. Faces come from their own SynFACS seed space, as pretraining data would.
- The instruction warm-start stands in for instruction tuning: text-only guided prompts with
  random AU lists and random emotions, no face (`instruct_rows`).
- `guided_fraction`: a share of training rows shown with synthesis's guided prompt (true AUs and
  emotion given), which an instruction-tuned model follows out of the box.

A stage refuses a `miniature:` section on a model that is not the tiny one (`tiny.is_tiny`).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facial_r1.checkpoints import vision_parameters
from facial_r1.data.schema import load_image
from facial_r1.errors import FacialR1Error
from facial_r1.facs import EMOTIONS
from facial_r1.prompts import analysis_prompt, guided_prompt

log = logging.getLogger(__name__)

OBJECTIVES = ("labels", "selfsup")


@dataclass
class Miniature:
    """A stage's `miniature:` section (all off by default)."""

    vision_warmup_steps: int = 0  # optimizer steps of batch 32 (SFT only)
    vision_warmup_lr: float = 2e-3
    vision_warmup_faces: int = 0  # extra SynFACS faces rendered for the warm-start only
    vision_warmup_objective: str = "labels"  # labels (AUs + emotion) | selfsup (no AU/emotion label)
    instruct_warmup_steps: int = 0  # optimizer steps of text-only guided prompts (SFT only)
    guided_fraction: float = 0.0  # share of training rows shown with the guided prompt

    @classmethod
    def from_config(cls, section: dict | None, model: str, kind: str, tiny: bool | None = None) -> "Miniature":
        """The section checked: known keys, warm-starts in SFT only, and the tiny model only
        (`tiny`: whether `model` is, when the caller knows; else its config is read)."""
        from facial_r1.tiny import is_tiny

        if not section:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise FacialR1Error(f"miniature: unknown key(s) {unknown}; miniature keys are {sorted(known)}")
        mini = cls(**section)
        if kind != "sft" and (mini.vision_warmup_steps or mini.instruct_warmup_steps):
            raise FacialR1Error(f"miniature: warm-starts belong to the SFT stage, not {kind}")
        if any(getattr(mini, f.name) != f.default for f in fields(cls)) and not (is_tiny(model) if tiny is None else tiny):
            raise FacialR1Error(f"miniature: {model} is not the embedded tiny model; its options (warm-starts, "
                                f"guided rows) stand in for pretraining a real model already has: remove them")
        return mini

    def prompt(self, sample: dict, style: str, rng) -> str:
        """A training row's prompt: the guided one for a `guided_fraction` share drawn from `rng`
        (samples with AUs and a label only), else the analysis prompt."""
        if self.guided_fraction and sample["AUs"] is not None and sample["labels"] \
                and rng.random() < self.guided_fraction:
            return guided_prompt(sample["question"], sample["AUs"], sample["labels"][0], style=style)
        return analysis_prompt(sample["question"], style)
THUMB = 28  # side of the grey thumbnail the selfsup objective reconstructs


def vision_warmup(model, processor, samples: list[dict], steps: int, lr: float = 2e-3, batch_size: int = 32,
                  seed: int = 0, extra_faces: int = 0, objective: str = "labels") -> dict:
    """Train the vision tower for `steps` optimizer steps; returns what it trained on (faces,
    the labels it saw) and the loss at the start and the end."""
    if objective not in OBJECTIVES:
        raise FacialR1Error(f"unknown vision_warmup_objective {objective!r}; choose from {OBJECTIVES}")
    if steps <= 0:
        return {"steps": 0}
    if objective == "labels":
        faces = [(s["image_path"], label_target(s["AUs"], s["labels"][0])) for s in samples
                 if s["AUs"] is not None and s["labels"]]
        faces += [(im, label_target(s["AUs"], s["labels"][0])) for s, im in rendered_faces(extra_faces, seed, processor)]
    else:
        faces = [(im, selfsup_target(s, im)) for s, im in rendered_faces(extra_faces, seed, processor)]
    if not faces:
        raise FacialR1Error(f"vision warm-start ({objective}) has no faces: give vision_warmup_faces > 0")
    torch.manual_seed(seed)
    hidden = model.config.text_config.hidden_size
    n_tokens = _token_count(processor, _image(faces[0][0]))  # faces are resized to one size: a fixed grid
    n_out = len(faces[0][1][0]) + len(faces[0][1][1])
    heads = nn.ModuleList([nn.Linear(n_tokens * hidden, n_out), nn.Linear(hidden, n_out)])
    params = vision_parameters(model)
    trainable = [p.requires_grad for p in params]  # restored after: freeze_vision must hold in SFT
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.Adam(params + list(heads.parameters()), lr=lr)
    rng = random.Random(seed)
    model.train()
    start, losses = time.monotonic(), []
    for _ in range(steps):
        batch = rng.sample(faces, min(batch_size, len(faces)))
        pix = processor.image_processor(images=[_image(f) for f, _ in batch], return_tensors="pt")
        feats = torch.stack(list(model.get_image_features(pix["pixel_values"], pix["image_grid_thw"]).pooler_output))
        binary = torch.tensor(np.stack([t[0] for _, t in batch]), dtype=torch.float32)
        rest = torch.tensor(np.stack([t[1] for _, t in batch]), dtype=torch.float32)
        loss = 0.0
        for out in (heads[0](feats.flatten(1)), heads[1](feats.mean(1))):  # (B, tokens, hidden) -> (B, n_out)
            logits, pred = out[:, :binary.shape[1]], out[:, binary.shape[1]:]
            loss = loss + nn.functional.binary_cross_entropy_with_logits(logits, binary)
            loss = loss + (nn.functional.cross_entropy(pred, rest.argmax(1)) if objective == "labels"
                           else nn.functional.mse_loss(pred, rest))
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    for p, flag in zip(params, trainable, strict=True):
        p.requires_grad_(flag)
    seen = "AUs + emotion" if objective == "labels" else "none (identity, pose and pixels only)"
    log.info("vision warm-start (%s): %d steps on %d faces in %.0f s, loss %.3f -> %.3f; labels seen: %s",
             objective, steps, len(faces), time.monotonic() - start, losses[0], losses[-1], seen)
    return {"steps": steps, "faces": len(faces), "objective": objective, "labels_seen": seen,
            "loss_first": losses[0], "loss_last": losses[-1]}


def label_target(aus: list[str], emotion: str) -> tuple[np.ndarray, np.ndarray]:
    """(AU present 0/1 over the rendered AUs, emotion one-hot)."""
    from facial_r1.data.synfacs import RENDERED_AUS

    return (np.array([a in aus for a in RENDERED_AUS], dtype=np.float32),
            np.eye(len(EMOTIONS), dtype=np.float32)[EMOTIONS.index(emotion)])


def selfsup_target(sample: dict, image) -> tuple[np.ndarray, np.ndarray]:
    """Label-free targets of a rendered face: (hair style one-hot, [identity and pose numbers
    scaled to about [0, 1], grey thumbnail pixels]). No AU or emotion label is read: the numbers
    are identity and pose, and the thumbnail is the face itself, to reconstruct (self-supervised)."""
    ident, pose = sample["meta_info"]["identity"], sample["meta_info"]["pose"]
    numbers = [(ident["face_w"] - 0.27) / 0.06, (ident["face_h"] - 0.36) / 0.05, (ident["eye_gap"] - 0.10) / 0.03,
               (ident["eye_w"] - 0.048) / 0.014, (ident["brow_thick"] - 0.012) / 0.014,
               (ident["mouth_w"] - 0.08) / 0.025, *(c / 255 for c in ident["skin"]), *(c / 255 for c in ident["hair"]),
               *(c / 255 for c in ident["brow_color"]), *(c / 255 for c in ident["background"]),
               (pose["angle"] + 8) / 16, (pose["scale"] - 0.9) / 0.18, (pose["dx"] + 0.04) / 0.08,
               (pose["dy"] + 0.04) / 0.08, (pose["light"] - 0.8) / 0.35, (pose["light_dir"] + 0.2) / 0.4]
    thumb = np.asarray(image.convert("L").resize((THUMB, THUMB)), dtype=np.float32).ravel() / 255
    return np.eye(3, dtype=np.float32)[ident["hair_style"]], np.concatenate([np.array(numbers, np.float32), thumb])


def rendered_faces(n: int, seed: int, processor) -> list[tuple]:
    """`n` (sample, image) SynFACS pairs from a seed space of their own (disjoint from any data set's faces)."""
    if n <= 0:
        return []
    from facial_r1.data.synfacs import make_sample

    size = int(processor.image_processor.size["longest_edge"] ** 0.5)  # max pixels -> side
    t = time.monotonic()
    out = [make_sample(i, f"warmup{seed}", size) for i in range(n)]
    log.info("vision warm-start: rendered %d extra faces in %.0f s", n, time.monotonic() - t)
    return out


def _image(face):
    return face if not isinstance(face, str) else load_image(face)


def _token_count(processor, image) -> int:
    pix = processor.image_processor(images=[image], return_tensors="pt")
    return int(pix["image_grid_thw"].prod()) // processor.image_processor.merge_size ** 2


def instruct_row_count(steps: int, stage: dict) -> int:
    """Rows the instruction warm-start draws: one batch of the SFT stage's (`stage`: its config
    keys) per optimizer step, every row seen once."""
    return steps * stage.get("per_device_train_batch_size", 8) * stage.get("gradient_accumulation_steps", 1)


def instruct_rows(n: int, seed: int, prompt_style: str) -> list[dict]:
    """`n` text-only rows for the instruction warm-start (tiny default only): the guided prompt
    of synthesis with a random AU list and a random emotion, drawn independently, and the
    reasoning that cites exactly those AUs and answers that emotion. A stand-in for a real
    VLM's instruction tuning: no face and no AU-emotion pairing is seen (the lists are uniform
    subsets of the rendered AUs, not emotion prototypes), only "write about the AUs you are
    given and answer the emotion you are given"."""
    from facial_r1.data.synfacs import RENDERED_AUS, describe
    from facial_r1.prompts import DEFAULT_QUESTION, assistant_message, guided_prompt

    rng = random.Random(f"instruct-{seed}")
    rows = []
    for _ in range(n):
        k = rng.randint(0, 6)
        aus = [a for a in RENDERED_AUS if a in set(rng.sample(RENDERED_AUS, k))]  # in the data's order
        emotion = rng.choice(EMOTIONS)
        prompt = guided_prompt(DEFAULT_QUESTION, aus, emotion, style=prompt_style)
        rows.append({"prompt": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                     "completion": assistant_message(describe(aus, emotion, rng, rng.random() < 0.2))})
    return rows


def instruct_warmup(model, processor, args, steps: int, prompt_style: str) -> None:
    """The instruction warm-start: TRL's SFTTrainer with the SFT stage's own settings (`args`, an
    SFTConfig), for `steps` steps on text-only rows, saving nothing."""
    from dataclasses import replace

    from datasets import Dataset
    from trl import SFTTrainer

    rows = instruct_rows(instruct_row_count(steps, vars(args)), args.seed, prompt_style)
    warm = replace(args, max_steps=steps, save_strategy="no", report_to=[],
                   output_dir=str(Path(args.output_dir) / "instruct"))
    SFTTrainer(model=model, args=warm, train_dataset=Dataset.from_list(rows), processing_class=processor).train()
    log.info("instruction warm-start: %d steps on %d text-only guided prompts (no face)", steps, len(rows))
