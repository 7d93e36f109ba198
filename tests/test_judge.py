import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facial_r1.judge import judge_scores, parse_score


@pytest.fixture
def judge_server():
    """A local OpenAI-compatible endpoint. Its reply depends on the candidate text:
    'good' -> "9", 'vague' -> "Score: 4/10", 'junk' -> "no idea" (no score), 'boom' -> HTTP 500."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization")))
            prompt = body["messages"][0]["content"]
            candidate = prompt.rsplit("Candidate:\n", 1)[1]
            if candidate == "boom":
                self.send_response(500)
                self.end_headers()
                return
            reply = {"good": "9", "vague": "Score: 4/10"}.get(candidate, "no idea")
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


@pytest.mark.parametrize("candidates, mean, scored, failed", [
    (["good", "vague"], 6.5, 2, 0),          # (9 + 4) / 2
    (["good", "junk", "boom"], 9.0, 1, 2),   # failures are counted and left out, not scored 0
    (["boom"], None, 0, 1),                  # nothing scored: no mean
])
def test_judge_scores_against_a_local_server(judge_server, monkeypatch, candidates, mean, scored, failed):
    url, seen = judge_server
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    out = judge_scores(url, "judge-m", ["reference"] * len(candidates), candidates, "JUDGE_KEY")
    assert (out["judge_score"], out["judge_scored"], out["judge_failed"]) == (mean, scored, failed)
    path, body, auth = seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-m" and auth == "Bearer sk-test"
    assert "Reference:\nreference" in body["messages"][0]["content"]


def test_unreachable_judge_is_a_counted_failure():
    out = judge_scores("http://127.0.0.1:9/v1", "m", ["r"], ["c"])
    assert out["judge_failed"] == 1 and out["judge_score"] is None


@pytest.mark.parametrize("reply, score", [("7", 7), ("10/10", 10), ("I'd say 3.", 3), ("0", None), ("", None)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_eval_reports_the_judge(judge_server, tiny_model, synfacs_small, tmp_path):
    from facial_r1 import evaluate

    url, seen = judge_server
    m = evaluate.main(str(tiny_model), str(synfacs_small / "test.jsonl"), [str(synfacs_small)], "synfacs",
                      str(tmp_path), max_new_tokens=4, judge_url=url, judge_model="j")
    # the random model's text gets "no idea" from this judge: all 12 counted as failures
    assert (m["judge_scored"], m["judge_failed"], m["judge_score"]) == (0, 12, None)
    assert len(seen) == 12
