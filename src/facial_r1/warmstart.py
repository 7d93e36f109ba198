"""Vision warm-start for the tiny default model only.

A randomly initialised tiny VLM ignores the image under plain SFT (measured: one fixed
answer for every face). A real base model arrives with a vision tower pretrained on many
other images; this stands in for that pretraining. For a short time only the vision tower +
merger are trained, with two throw-away linear heads predicting the AUs (BCE) and the
emotion (CE): one on all visual tokens of a face (it forces features that know *where* a
movement is, brows vs mouth), one on their mean (what a fresh language model's attention
reads first). Faces: the run's training samples (never the test split) plus
`extra_faces` freshly rendered SynFACS faces from their own seed, as pretraining data would be:
on 1,000 faces alone the tower memorises identities and learns nothing that transfers.
Configs for real models leave it off (`vision_warmup_seconds: 0`).
"""

from __future__ import annotations

import logging
import random
import time

import torch
from torch import nn

from facial_r1.data.schema import load_image
from facial_r1.facs import EMOTIONS
from facial_r1.models import vision_parameters

log = logging.getLogger(__name__)


def vision_warmup(model, processor, samples: list[dict], seconds: float, lr: float = 2e-3,
                  batch_size: int = 32, seed: int = 0, extra_faces: int = 0) -> dict:
    """Train the vision tower for `seconds` on samples with AUs and labels. Returns stats."""
    if seconds <= 0:
        return {"steps": 0}
    faces = [(s["image_path"], s["AUs"], s["labels"][0]) for s in samples if s["AUs"] is not None and s["labels"]]
    faces += rendered_faces(extra_faces, seed, processor)
    if not faces:
        return {"steps": 0}
    aus = sorted({a for _, f_aus, _ in faces for a in f_aus}, key=lambda a: int(a[2:]))
    hidden = model.config.text_config.hidden_size
    n_tokens = _token_count(processor, _image(faces[0][0]))  # faces are resized to one size: a fixed grid
    all_tokens, pooled = nn.Linear(n_tokens * hidden, len(aus) + len(EMOTIONS)), nn.Linear(hidden, len(aus) + len(EMOTIONS))
    params = vision_parameters(model)
    trainable = [p.requires_grad for p in params]  # restored after: freeze_vision must hold in SFT
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.Adam(params + list(all_tokens.parameters()) + list(pooled.parameters()), lr=lr)
    rng = random.Random(seed)
    model.train()
    start, steps, losses = time.monotonic(), 0, []
    while time.monotonic() - start < seconds:
        batch = rng.sample(faces, min(batch_size, len(faces)))
        pix = processor.image_processor(images=[_image(f) for f, _, _ in batch], return_tensors="pt")
        feats = torch.stack(list(model.get_image_features(pix["pixel_values"], pix["image_grid_thw"]).pooler_output))
        au_target = torch.tensor([[float(a in f_aus) for a in aus] for _, f_aus, _ in batch])
        emo_target = torch.tensor([EMOTIONS.index(e) for _, _, e in batch])
        loss = 0.0
        for logits in (all_tokens(feats.flatten(1)), pooled(feats.mean(1))):  # (B, tokens, hidden) -> (B, classes)
            loss = loss + nn.functional.binary_cross_entropy_with_logits(logits[:, : len(aus)], au_target) + \
                nn.functional.cross_entropy(logits[:, len(aus):], emo_target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        steps += 1
    for p, flag in zip(params, trainable, strict=True):
        p.requires_grad_(flag)
    log.info("vision warm-start: %d steps on %d faces in %.0f s, loss %.3f -> %.3f", steps, len(faces), seconds,
             losses[0], losses[-1])
    return {"steps": steps, "faces": len(faces), "loss_first": losses[0], "loss_last": losses[-1]}


def rendered_faces(n: int, seed: int, processor) -> list[tuple]:
    """`n` SynFACS faces from a seed space of their own (disjoint from any data set's faces)."""
    if n <= 0:
        return []
    from facial_r1.data.synfacs import make_sample

    size = int(processor.image_processor.size["longest_edge"] ** 0.5)  # max pixels -> side
    t = time.monotonic()
    out = []
    for i in range(n):
        sample, image = make_sample(i, f"warmup{seed}", size)
        out.append((image, sample["AUs"], sample["labels"][0]))
    log.info("vision warm-start: rendered %d extra faces in %.0f s", n, time.monotonic() - t)
    return out


def _image(face):
    return face if not isinstance(face, str) else load_image(face)


def _token_count(processor, image) -> int:
    pix = processor.image_processor(images=[image], return_tensors="pt")
    return int(pix["image_grid_thw"].prod()) // processor.image_processor.merge_size ** 2
