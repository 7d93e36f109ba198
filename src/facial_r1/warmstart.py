"""Vision warm-start for the tiny default model only.

A randomly initialised tiny VLM ignores the image under plain SFT (measured: one fixed
answer for every face). A real base model arrives with a pretrained vision tower; this
stands in for that pretraining: for a short time, only the vision tower + merger are trained,
with a throw-away linear head on the mean-pooled image tokens predicting the AUs (BCE) and
the emotion (CE). It runs on the training split only, never on the held-out test set.
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
                  batch_size: int = 32, seed: int = 0) -> dict:
    """Train the vision tower for `seconds` on samples with AUs and labels. Returns stats."""
    samples = [s for s in samples if s["AUs"] is not None and s["labels"]]
    aus = sorted({a for s in samples for a in s["AUs"]}, key=lambda a: int(a[2:]))
    if seconds <= 0 or not samples:
        return {"steps": 0}
    # The head reads all visual tokens of a face (not their mean: that loses *where* a
    # movement is, brows vs mouth). Faces are resized to one size, so the grid is fixed.
    n_tokens = _token_count(processor, samples[0])
    head = nn.Linear(n_tokens * model.config.text_config.hidden_size, len(aus) + len(EMOTIONS))
    params = vision_parameters(model)
    trainable = [p.requires_grad for p in params]  # restored after: freeze_vision must hold in SFT
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.Adam(params + list(head.parameters()), lr=lr)
    rng = random.Random(seed)
    model.train()
    start, steps, losses = time.monotonic(), 0, []
    while time.monotonic() - start < seconds:
        batch = rng.sample(samples, min(batch_size, len(samples)))
        images = [load_image(s["image_path"], s["id"]) for s in batch]
        pix = processor.image_processor(images=images, return_tensors="pt")
        feats = model.get_image_features(pix["pixel_values"], pix["image_grid_thw"]).pooler_output
        logits = head(torch.stack([f.reshape(-1) for f in feats]))  # (B, tokens*hidden) -> (B, classes)
        au_target = torch.tensor([[float(a in s["AUs"]) for a in aus] for s in batch])
        emo_target = torch.tensor([EMOTIONS.index(s["labels"][0]) for s in batch])
        loss = nn.functional.binary_cross_entropy_with_logits(logits[:, : len(aus)], au_target) + \
            nn.functional.cross_entropy(logits[:, len(aus):], emo_target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        steps += 1
    for p, flag in zip(params, trainable, strict=True):
        p.requires_grad_(flag)
    log.info("vision warm-start: %d steps in %.0f s, loss %.3f -> %.3f", steps, seconds, losses[0], losses[-1])
    return {"steps": steps, "loss_first": losses[0], "loss_last": losses[-1]}


def _token_count(processor, sample: dict) -> int:
    pix = processor.image_processor(images=[load_image(sample["image_path"], sample["id"])], return_tensors="pt")
    return int(pix["image_grid_thw"].prod()) // processor.image_processor.merge_size ** 2
