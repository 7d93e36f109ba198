"""Stage 3: the trained model writes AU-grounded reasoning for label-only faces.

    facial-r1 synthesize --model CKPT --data pool.jsonl --image-folders DIR --out synth.jsonl [--attempts K]

For every sample with AUs and an emotion label, the model sees the guided prompt (the true
AUs and emotion); up to K attempts, each retry told what was wrong with the last one. An
analysis is kept only if it passes quality control (`check`). Progress is appended to
`OUT.log.jsonl` (one line per finished sample, by id), so a killed run restarted with the
same arguments continues where it stopped; at the end the kept rows are written to OUT
atomically, with a report of counts per rejection reason in `OUT.report.json`.
Under `accelerate launch` each process (GPU) takes a contiguous share and its own log
`OUT.log-rankN.jsonl`; the main process merges them. With `engine: vllm` (or auto, when vLLM is
installed and a GPU is there) one process generates with vLLM's offline engine instead of HF
`generate`; `vllm_args` go to `vllm.LLM` (tensor_parallel_size for several GPUs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facial_r1.data.schema import load_image, read_samples_with_images, write_jsonl
from facial_r1.errors import FacialR1Error
from facial_r1.parse import parse_completion
from facial_r1.prompts import guided_prompt
from facial_r1.rewards import gold_aus, gold_emotion, set_f1

log = logging.getLogger(__name__)


@dataclass
class QualityControl:
    """The rules a synthesized analysis must pass (defaults follow the paper's filter)."""

    au_f1_min: float = 1.0  # cited vs true AUs: 1.0 = exactly the true set
    contradiction_words: list = field(default_factory=lambda: [
        "however", "but", "although", "unclear", "uncertain", "not sure", "cannot tell"])
    min_chars: int = 40  # of the reasoning
    max_chars: int = 1500
    dedup_threshold: float = 0.9  # word-trigram Jaccard with a kept description at/above this = duplicate


# Rejection reasons, in the order they are checked; the report counts each.
REASONS = ("format", "aus", "emotion", "contradiction", "length", "duplicate")


def check(text: str, sample: dict, qc: QualityControl, kept: Dedup) -> dict[str, str]:
    """Faults of one completion, by reason; empty = keep. Messages go back into the retry prompt."""
    a = parse_completion(text)
    faults: dict[str, str] = {}
    if not a.format_valid:
        faults["format"] = "write the reasoning inside <think></think>, then only the emotion inside <answer></answer>"
    true_aus = gold_aus(sample["AUs"])
    if set_f1(set(a.aus), true_aus) < qc.au_f1_min:
        faults["aus"] = (f"you cited {', '.join(a.aus) or 'no AU'} but the face shows "
                         f"{', '.join(sorted(true_aus, key=lambda x: int(x[2:]))) or 'no AU'}")
    if a.answer != gold_emotion(sample["labels"]):
        faults["emotion"] = f"you answered {a.answer_text or 'nothing'} but the emotion is {sample['labels'][0]}"
    words = [w for w in qc.contradiction_words if re.search(rf"\b{re.escape(w)}\b", a.reasoning, re.IGNORECASE)]
    if words:
        faults["contradiction"] = f"do not hedge or contradict yourself ({', '.join(words)})"
    if not qc.min_chars <= len(a.reasoning) <= qc.max_chars:
        faults["length"] = f"the reasoning must have {qc.min_chars} to {qc.max_chars} characters"
    if not faults and kept.is_duplicate(text):
        faults["duplicate"] = "describe this face in your own words, not as an earlier one"
    return faults


class Dedup:
    """Near-duplicate index of kept descriptions: word-trigram Jaccard, compared only with
    kept texts of similar length (a size ratio below the threshold cannot reach it)."""

    def __init__(self, threshold: float):
        self.threshold, self.kept = threshold, []

    @staticmethod
    def shingles(text: str) -> frozenset:
        words = re.findall(r"\w+", text.lower())
        return frozenset(zip(words, words[1:], words[2:])) or frozenset([tuple(words)])

    def is_duplicate(self, text: str) -> bool:
        s = self.shingles(text)
        # Jaccard >= t needs |A|/|B| >= t, so only kept sets of similar size can match.
        return any(len(s & k) / len(s | k) >= self.threshold for k in self.kept
                   if min(len(s), len(k)) >= self.threshold * max(len(s), len(k)))

    def add(self, text: str) -> None:
        self.kept.append(self.shingles(text))


@dataclass
class Synthesis:
    attempts: int = 3
    batch_size: int = 16
    max_new_tokens: int = 160
    temperature: float = 0.8  # retries sample; the first attempt is greedy unless sample_first
    # Sample the first attempt too. Greedy decoding writes one text per AU set for a model
    # that words faces alike (the tiny default), and QC's near-duplicate rule then keeps one
    # face of each set: measured on 400 pool faces of the tiny default, a greedy attempt kept 7 %.
    sample_first: bool = False
    qc: QualityControl = field(default_factory=QualityControl)
    seed: int = 0  # sampled retries draw from a generator seeded by this and the batch's first id
    engine: str = "auto"  # hf | vllm | auto (vLLM when installed, on a GPU, in one process)
    vllm_args: dict = field(default_factory=dict)  # to vllm.LLM: tensor_parallel_size, gpu_memory_utilization, ...

    @classmethod
    def from_dict(cls, raw: dict) -> "Synthesis":
        """From config keys (a pipeline's `synthesis:`, a stage spec), `qc` a dict of its own."""
        return cls(**{k: v for k, v in raw.items() if k != "qc"}, qc=QualityControl(**raw.get("qc", {})))

    def __post_init__(self):
        from facial_r1.generation import check_engine

        check_engine(self.engine)  # a typo fails when the settings are read, not after training


def main(model: str, data: str, image_folders: Sequence[str], out: str, settings: Synthesis | None = None,
         prompt_style: str | None = None, kept_before: Sequence[str] = ()) -> dict:
    """Synthesize reasoning for `data`; returns the report (also written next to `out`).
    `kept_before`: descriptions kept by earlier rounds; a new one near-duplicating them is rejected."""
    from tqdm import tqdm

    from facial_r1 import checkpoints, generation

    settings = settings or Synthesis()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples, problems = read_samples_with_images(data, image_folders, skip_bad=True)
    for p in problems:
        log.warning("skipped: %s", p)
    todo = [s for s in samples if s["AUs"] is not None and s["labels"]]
    if not todo:
        raise FacialR1Error(f"{data}: no sample has both AUs and an emotion label to synthesize for")
    state = generation.process_state()
    engine = generation.resolve_engine(settings.engine, state.num_processes)  # refuses before anything is written
    if state.is_main_process:  # only the main process changes the logs before the work starts
        _drop_stale_logs(out, fingerprint(model, data, settings, prompt_style, kept_before))
        read_logs(out, repair=True)  # cuts a torn last line left by a killed run
    state.wait_for_everyone()
    done = read_logs(out)
    dedup = Dedup(settings.qc.dedup_threshold)
    for text in kept_before:
        dedup.add(text)
    for record in done.values():
        if record["kept"]:
            dedup.add(record["row"]["description"])
    pending = [s for s in todo if s["id"] not in done]
    state.wait_for_everyone()  # every process has read the logs before any process appends to them
    log.info("synthesize: %d samples, %d done before, %d to go", len(todo), len(todo) - len(pending), len(pending))

    log.info("synthesize: generating with %s", "vLLM's offline engine" if engine == "vllm" else "HF generate")
    with state.split_between_processes(pending) as mine:  # contiguous shares, one per process
        if mine:
            generate = _generator(model, engine, settings.vllm_args, state.device)
            if prompt_style is None:
                prompt_style = checkpoints.read_prompt_settings(model)["prompt"]
            name = ".log.jsonl" if state.num_processes == 1 else f".log-rank{state.process_index}.jsonl"
            with open(out.with_suffix(name), "a", encoding="utf-8") as log_file:
                for i in tqdm(range(0, len(mine), settings.batch_size), desc="synthesize", unit="batch",
                              disable=not state.is_main_process):
                    records = synthesize_batch(generate, mine[i:i + settings.batch_size], settings, dedup,
                                               prompt_style, model)
                    log_file.write("".join(json.dumps(r) + "\n" for r in records))
                    log_file.flush()
                    os.fsync(log_file.fileno())
    state.wait_for_everyone()
    if state.is_main_process:
        finalize(todo, read_logs(out), out, problems, settings, kept_before)
    state.wait_for_everyone()
    return json.loads(out.with_suffix(".report.json").read_text())


def fingerprint(model: str, data: str, settings: Synthesis, prompt_style: str | None,
                kept_before: Sequence[str] = ()) -> str:
    """What a progress log's records depend on: the model's weights and config, the data, the settings."""
    import hashlib

    h = hashlib.sha256(json.dumps([asdict(settings), prompt_style, list(kept_before)], sort_keys=True).encode())
    for path in [Path(data), *sorted(p for p in Path(model).glob("*") if p.suffix in (".json", ".safetensors"))]:
        if path.is_file():
            size = path.stat().st_size
            with open(path, "rb") as f:  # the size plus the first and last MiB: weights differ there too
                h.update(f"{path.name}:{size}".encode() + f.read(1 << 20))
                f.seek(max(0, size - (1 << 20)))
                h.update(f.read())
    if not Path(model).is_dir():
        h.update(model.encode())
    return h.hexdigest()[:16]


def _drop_stale_logs(out: Path, stamp: str) -> None:
    """Progress logs written for other inputs are removed (and said so): a re-run with another
    model, data or settings starts over instead of mixing in old rows."""
    marker = out.with_suffix(".fingerprint")
    logs = [out.with_suffix(".log.jsonl"), *out.parent.glob(f"{out.stem}.log-rank*.jsonl")]
    if marker.is_file() and marker.read_text() == stamp:
        return
    stale = [p for p in logs if p.is_file()]
    if stale:
        log.warning("synthesize: %s were written for other inputs (model, data or settings changed): starting over",
                    ", ".join(p.name for p in stale))
    for p in stale:
        p.unlink()
    marker.write_text(stamp)


def _generator(model: str, engine: str, vllm_args: dict, device):
    """fn(images, prompts, max_new_tokens, do_sample, temperature) -> texts, on HF or vLLM."""
    from functools import partial

    from facial_r1 import checkpoints, generation

    if engine == "vllm":
        return generation.vllm_generator(model, checkpoints.load_processor(model), vllm_args)
    net, processor = checkpoints.load(model)
    net.to(device)
    return partial(generation.generate, net, processor)


def synthesize_batch(generate, batch: list[dict], settings: Synthesis, dedup: Dedup, prompt_style: str,
                     model_name: str) -> list[dict]:
    """All attempts for one batch; returns one log record per sample. `generate`: see `_generator`."""
    images, records, faults = {}, {}, {}
    for s in batch:
        try:
            images[s["id"]] = load_image(s["image_path"], s["id"])
        except FacialR1Error as e:  # one bad image never stops the batch
            records[s["id"]] = {"id": s["id"], "kept": False, "reasons": ["image"], "error": str(e), "attempts": 0}
    for attempt in range(1, settings.attempts + 1):
        open_ = [s for s in batch if s["id"] in images and not records.get(s["id"], {}).get("kept")]
        if not open_:
            break
        prompts = [guided_prompt(s["question"], s["AUs"], s["labels"][0], list(faults.get(s["id"], {}).values()),
                                 prompt_style) for s in open_]
        sample = attempt > 1 or settings.sample_first
        # seeded by the batch, not its position: reproducible across resumes and process counts (HF and vLLM)
        seed = zlib.crc32(f"{settings.seed}/{batch[0]['id']}/{attempt}".encode())
        texts = generate([images[s["id"]] for s in open_], prompts, settings.max_new_tokens,
                         do_sample=sample, temperature=settings.temperature, seed=seed)
        for s, text in zip(open_, texts, strict=True):
            found = check(text, s, settings.qc, dedup)
            faults[s["id"]] = found
            if not found:
                dedup.add(text)
                row = {k: v for k, v in s.items() if k != "image_path"}
                row["description"] = text.strip()
                row["meta_info"] = {**row.get("meta_info", {}), "synthesized": {"model": model_name, "attempt": attempt}}
                records[s["id"]] = {"id": s["id"], "kept": True, "attempts": attempt, "row": row}
            else:
                records[s["id"]] = {"id": s["id"], "kept": False, "attempts": attempt, "reasons": list(found),
                                    "last": text}
    return [records[s["id"]] for s in batch]


def read_logs(out: Path, repair: bool = False) -> dict[str, dict]:
    """Finished samples by id from the progress log(s) of `out` (one per process)."""
    done: dict[str, dict] = {}
    for path in [out.with_suffix(".log.jsonl"), *sorted(out.parent.glob(f"{out.stem}.log-rank*.jsonl"))]:
        done.update(read_log(path, repair))
    return done


def read_log(path: Path, repair: bool = False) -> dict[str, dict]:
    """Finished samples by id. A torn last line (the run was killed mid-write) is not read;
    `repair` also cuts it off the file (one process does that, before any process appends)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    out = {}
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FacialR1Error(f"{path}:{n}: corrupt progress line ({e}); delete the file to start over") from None
        out[record["id"]] = record
    return out


def finalize(todo: list[dict], done: dict[str, dict], out: Path, problems: list[str], settings: Synthesis,
             kept_before: Sequence[str] = ()) -> dict:
    """Kept rows in input order -> OUT (atomic), and the report -> OUT.report.json."""
    finished = [done[s["id"]] for s in todo if s["id"] in done]
    # Processes dedup only against their own share: one pass in input order catches the rest.
    index = Dedup(settings.qc.dedup_threshold)
    for text in kept_before:
        index.add(text)
    for r in finished:
        if r["kept"] and index.is_duplicate(r["row"]["description"]):
            r.update(kept=False, reasons=["duplicate"], last=r.pop("row")["description"])
        elif r["kept"]:
            index.add(r["row"]["description"])
    kept = [r["row"] for r in finished if r["kept"]]
    reasons = Counter(reason for r in finished if not r["kept"] for reason in r["reasons"])
    report = {
        "input": len(todo), "finished": len(finished), "kept": len(kept),
        "kept_rate": len(kept) / max(1, len(finished)),
        "rejected": len(finished) - len(kept),
        "rejected_by_reason": {k: reasons[k] for k in (*REASONS, "image") if reasons[k]},
        "kept_at_attempt": dict(sorted(Counter(r["attempts"] for r in finished if r["kept"]).items())),
        "unreadable_input": problems,
        "settings": asdict(settings),
    }
    if kept:
        write_jsonl(out, kept)
        report["output"] = str(out)
    else:
        report["output"] = None
        report["message"] = "no sample passed quality control: the model produced nothing usable; nothing written"
        log.error("synthesize: %s (%s)", report["message"], dict(reasons))
    tmp = out.with_suffix(".report.json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out.with_suffix(".report.json"))
    return report
