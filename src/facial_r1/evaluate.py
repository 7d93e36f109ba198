"""Evaluation in the benchmarks' protocols: batched greedy generation, then AU F1 (per AU and
mean over the protocol's AU subset, AUs with gold positives only), emotion accuracy / macro-F1 /
UAR, ROUGE-L (stemmed), REGE (per task for FABA), format rate.

    facial-r1 eval --model CKPT --data test.jsonl --image-folders DIR --protocol synfacs --out DIR

Every input row is accounted for in metrics.json: `n_input` rows read, `n_scored` generated and
scored, `skipped` by reason. A test file with bad rows (schema errors, missing or unreadable
images) is an error unless `--skip-bad` is given. The emotion of a row is its first label.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from facial_r1.data.schema import ReadReport, load_image, read_samples_with_images, write_jsonl
from facial_r1.errors import FacialR1Error
from facial_r1.metrics import au_metrics, emotion_metrics, rege, rouge_l
from facial_r1.parse import parse_completion
from facial_r1.prompts import analysis_prompt
from facial_r1.scoring import check_protocol, full, score_table

log = logging.getLogger(__name__)

def generation_budget(given: int | None, settings: dict) -> int:
    """Eval's max_new_tokens: as given, else the completion length the checkpoint was trained to
    (GRPO records it), but never under 256, the released eval's budget.

    >>> generation_budget(None, {"prompt": "full"}), generation_budget(None, {"max_new_tokens": 512}), generation_budget(64, {})
    (256, 512, 64)
    """
    return given if given is not None else max(256, settings.get("max_new_tokens") or 0)


def predict(model, processor, samples: list[dict], prompt_style: str = "full", batch_size: int = 16,
            max_new_tokens: int = 128) -> list[str]:
    """Greedy completions for samples (each needs `image_path`), batched, with a progress bar.

    An image that fails to load yields an empty completion (scored as wrong), logged by id.
    """
    from tqdm import tqdm

    from facial_r1.generation import generate

    out: list[str] = []
    for i in tqdm(range(0, len(samples), batch_size), desc="generate", unit="batch", disable=len(samples) <= batch_size):
        batch = samples[i:i + batch_size]
        images, keep = _load_batch(batch)
        texts = iter(generate(model, processor, images, [analysis_prompt(s["question"], prompt_style) for s in keep],
                              max_new_tokens) if keep else [])
        kept = {id(s) for s in keep}
        out += [next(texts) if id(s) in kept else "" for s in batch]
    return out


def _load_batch(batch: list[dict]) -> tuple[list, list[dict]]:
    """The images of a batch that load, and their samples; one that fails is logged by id and
    left out (its completion is scored as wrong), so one bad image never stops the batch."""
    images, keep = [], []
    for s in batch:
        try:
            images.append(load_image(s["image_path"], s["id"]))
            keep.append(s)
        except FacialR1Error as e:
            log.warning("%s", e)
    return images, keep


def sample_completions(model, processor, samples: list[dict], prompt_style: str, k: int, temperature: float,
                       max_new_tokens: int, batch_size: int = 16, seed: int = 0) -> list[list[str]]:
    """k sampled completions per face at `temperature`, each batch seeded (seed + its index), so
    the same call draws the same texts. A face whose image fails to load gets k empty ones."""
    from facial_r1.generation import generate

    per = max(1, batch_size // k)  # faces per batch, k copies each
    out: list[list[str]] = []
    for b, i in enumerate(range(0, len(samples), per)):
        images, batch = _load_batch(samples[i:i + per])
        texts = iter(generate(model, processor, [im for im in images for _ in range(k)],
                              [analysis_prompt(s["question"], prompt_style) for s in batch for _ in range(k)],
                              max_new_tokens, do_sample=True, temperature=temperature, seed=seed + b)
                     if batch else [])
        kept = {id(s) for s in batch}
        out += [[next(texts) for _ in range(k)] if id(s) in kept else [""] * k for s in samples[i:i + per]]
    return out


def score(samples: list[dict], completions: list[str], protocol: str = "fea", stem: bool = True) -> dict:
    """Corpus metrics of completions against the samples' AUs, labels and descriptions, from the
    scoring table the bootstrap also reads (scoring.py): each task on the rows it can score."""
    table = score_table(samples, completions, protocol, stem)
    values = full(table)
    result: dict = {"protocol": protocol, "n": table.n, "format_rate": values["format_rate"] or 0.0}
    if table.aus:
        rows = np.flatnonzero(table.has_aus)
        result["n_au"] = len(rows)
        if len(rows):
            result["au"] = au_metrics([set(table.parsed[i].aus) for i in rows],
                                      [set(samples[i]["AUs"]) for i in rows], table.aus)
            if values["au_f1"] is not None:  # None: no AU of the subset has a gold positive
                result["au_f1"] = values["au_f1"]
            subset = set(table.aus)
            n_gold = sum(len(set(samples[i]["AUs"]) & subset) for i in rows)
            if n_gold:  # AUs cited per AU true (1.0: as many as gold), over the subset
                result["cited_per_gold"] = sum(len(set(table.parsed[i].aus) & subset) for i in rows) / n_gold
    if table.classes:
        rows = np.flatnonzero(table.labelled)
        result["n_emotion"] = len(rows)
        result["label_outside_protocol"] = int(table.label_outside.sum())
        if len(rows):
            result["emotion"] = emotion_metrics([table.parsed[i].answer for i in rows],
                                                [samples[i]["labels"][0] for i in rows], table.classes)
            result["accuracy"] = values["accuracy"]
            result["emotion_f1"] = result["emotion"]["macro_f1"]
    result["n_description"] = int(table.has_description.sum())
    if values["rouge_l"] is not None:
        result["rouge_l"] = values["rouge_l"]
        recognition = result.get("accuracy", result.get("au_f1"))
        if recognition is not None:
            result["rege"] = rege(recognition, result["rouge_l"])
    if protocol == "faba":
        rows = list(zip(table.parsed, completions, samples, strict=True))
        result.update(faba_rege(rows, table.aus, stem))
    return result


def faba_rege(rows: list[tuple], au_subset, stem: bool = True) -> dict:
    """FABA-Bench's two tasks scored apart, as its tables report them: the emotion task
    (accuracy + ROUGE-L on the emotion rows) and the AU task (mean AU F1 + ROUGE-L on the AU
    rows). A row's task is `meta_info.task` (the faba converter sets it), else AU when it has AUs."""
    def task(sample):
        return (sample.get("meta_info") or {}).get("task") or ("au" if sample["AUs"] is not None else "emotion")

    out = {}
    emo = [(a, c, s) for a, c, s in rows if task(s) == "emotion" and s["labels"] and s["description"]]
    if emo:
        acc = sum(a.answer == s["labels"][0] for a, _, s in emo) / len(emo)
        rl = rouge_l([c for _, c, _ in emo], [s["description"] for _, _, s in emo], stem)
        out["faba_emotion"] = {"n": len(emo), "recognition": acc, "rouge_l": rl, "rege": rege(acc, rl)}
    au = [(a, c, s) for a, c, s in rows if task(s) == "au" and s["AUs"] is not None and s["description"]]
    if au:
        f1 = au_metrics([set(a.aus) for a, _, _ in au], [set(s["AUs"]) for _, _, s in au], au_subset)["mean_f1"]
        rl = rouge_l([c for _, c, _ in au], [s["description"] for _, _, s in au], stem)
        out["faba_au"] = {"n": len(au), "recognition": f1, "rouge_l": rl, "rege": rege(f1, rl)}
    return out


def markdown_table(metrics: dict) -> str:
    """The paper's table shape: per-AU F1 and their mean, accuracy, ROUGE-L, REGE."""
    cols, vals = [], []
    for au, f1 in metrics.get("au", {}).get("per_au", {}).items():
        cols.append(au)
        vals.append(f"{100 * f1:.1f}")
    for key, label in (("au_f1", "AU F1 (mean)"), ("accuracy", "Acc"), ("rouge_l", "ROUGE-L"), ("format_rate", "Format")):
        if key in metrics:
            cols.append(label)
            vals.append(f"{100 * metrics[key]:.1f}")
    if metrics.get("judge_score") is not None:
        cols.append("Judge (1-10)")
        vals.append(f"{metrics['judge_score']:.2f}")
    if "rege" in metrics:
        cols.append("REGE")
        vals.append(f"{metrics['rege']:.1f}")
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n| " + " | ".join(vals) + " |\n"


def confusion_png(metrics: dict, path: Path) -> Path | None:
    if "emotion" not in metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emo = metrics["emotion"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(emo["confusion"], cmap="Blues")
    ax.set_xticks(range(len(emo["classes"]) + 1), emo["classes"] + ["(none)"], rotation=45, ha="right")
    ax.set_yticks(range(len(emo["classes"])), emo["classes"])
    for i, row in enumerate(emo["confusion"]):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {emo['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(model: str, data: str, image_folders: list[str], protocol: str, out: str, batch_size: int = 16,
         max_new_tokens: int | None = None, prompt_style: str | None = None, judge_url: str | None = None,
         judge_model: str | None = None, judge_key_env: str | None = None, backend: str = "vlm",
         landmarker: str | None = None, skip_bad: bool = False, stem: bool = True, samples_per_face: int = 0,
         sample_faces: int = 0, temperature: float = 1.0, seed: int = 0) -> dict:
    """Evaluate a checkpoint (`backend="vlm"`) or the landmark AU analyser (`"landmarks"`, the
    baseline row: no model) on `data`; writes predictions, metrics and plots under `out`.
    With `samples_per_face` k > 0, also k sampled completions at `temperature` for each of the
    first `sample_faces` faces (a fixed subset), in `samples.jsonl` (scoring.sampled_table).

    `max_new_tokens=None` takes the checkpoint's trained completion length, at least 256 (the
    released eval's budget), so a real model's reasoning is not cut short."""
    from facial_r1 import checkpoints, generation

    check_protocol(protocol)
    report = ReadReport(str(data))
    samples, problems = read_samples_with_images(data, image_folders, skip_bad=True, report=report)
    if problems and not skip_bad:
        shown = "\n  ".join(problems[:10])
        raise FacialR1Error(f"{data}: {len(problems)} of {report.n_lines} rows cannot be scored "
                            f"({dict(report.skipped)}); fix them or pass --skip-bad:\n  {shown}")
    for p in problems:
        log.warning("skipped: %s", p)
    if backend not in ("vlm", "landmarks") or (backend == "vlm" and not model):
        raise FacialR1Error(f"eval backend {backend!r} needs --model" if backend == "vlm" else
                            f"unknown eval backend {backend!r}; choose vlm or landmarks")
    from accelerate.utils import gather_object

    state = generation.process_state()  # each process takes a contiguous share
    with state.split_between_processes(samples) as mine:
        if backend == "landmarks":
            from facial_r1 import landmarks

            completions = landmarks.predict(mine, landmarker)
        else:
            net, processor = checkpoints.load(model)
            net.to(state.device)
            settings = checkpoints.read_prompt_settings(model)
            if prompt_style is None:  # use the prompt the checkpoint was trained with
                prompt_style = settings["prompt"]
            max_new_tokens = generation_budget(max_new_tokens, settings)
            completions = predict(net, processor, mine, prompt_style, batch_size, max_new_tokens)
    sampled: list[list[str]] = []
    if samples_per_face > 0 and backend == "vlm":
        with state.split_between_processes(samples[:sample_faces]) as mine:
            sampled = sample_completions(net, processor, mine, prompt_style, samples_per_face, temperature,
                                         max_new_tokens, batch_size, seed + 1000 * state.process_index)
    if state.num_processes > 1:
        completions = gather_object(completions)  # concatenated in process order = input order
        sampled = gather_object(sampled)
    accounting = {"n_input": report.n_lines, "n_scored": len(samples), "skipped": dict(report.skipped),
                  "dropped_au_codes": {"unknown": dict(report.unknown_aus), "not_scored": dict(report.not_scored_aus)}}
    if not state.is_main_process:
        return {**score(samples, completions, protocol, stem), **accounting}
    metrics = {**score(samples, completions, protocol, stem), **accounting,
               "max_new_tokens": max_new_tokens, "rouge_stemming": stem}
    if judge_url:
        from facial_r1.judge import judge_scores

        pairs = [(s["description"], c) for s, c in zip(samples, completions, strict=True) if s["description"]]
        metrics.update(judge_scores(judge_url, judge_model or "default", [r for r, _ in pairs],
                                    [c for _, c in pairs], judge_key_env))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "predictions.jsonl", [
        {"id": s["id"], "completion": c, "AUs": list(parse_completion(c).aus), "answer": parse_completion(c).answer,
         "gold_AUs": s["AUs"], "gold_labels": s["labels"]} for s, c in zip(samples, completions, strict=True)])
    if sampled:
        write_jsonl(out_dir / "samples.jsonl", [{"id": s["id"], "completions": c, "temperature": temperature}
                                                for s, c in zip(samples, sampled, strict=False)])
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(markdown_table(metrics))
    confusion_png(metrics, out_dir / "confusion.png")
    return metrics
