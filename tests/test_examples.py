"""The examples run: each one's ``--help``, and the serving example's
``--smoke`` settings. (The other smoke runs train and take a minute each;
run them by hand, e.g. ``python examples/custom_backbone.py --smoke``.)

`custom_backbone.py`, `tune_bridge_width.py` and `serve_tf_serving.py`
run as a user runs them, in a fresh process; `cifar10_tfds.py` runs in
this process on TFDS' mock data (`tfds.testing.mock_data` patches TFDS in
the process that loads the data), so nothing is downloaded.
"""

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.large

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


def run_example(name, *args, cwd):
    """Runs ``examples/<name>`` with ``args``; the finished process."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "no_proxy": "127.0.0.1,localhost",  # the stub server is local
    }
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def check_ran(process):
    assert process.returncode == 0, (
        process.stdout[-3000:] + process.stderr[-3000:]
    )
    return process.stdout


def import_example(name):
    """Imports ``examples/<name>`` as a module (registered, so that
    AutoGraph can read the source of its functions)."""
    module_name = f"example_{os.path.splitext(name)[0]}"
    spec = importlib.util.spec_from_file_location(
        module_name, os.path.join(EXAMPLES, name)
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def test_cifar10_recipe_never_downloads_by_default(tmp_path, capsys):
    cifar = import_example("cifar10_tfds.py")
    status = cifar.main(
        ["--data-dir", str(tmp_path / "tfds")]
        + ["--output", str(tmp_path / "out")]
    )
    assert status == 2
    assert "tfds build cifar10" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["cifar10_tfds.py", "serve_tf_serving.py"])
def test_help(name, tmp_path):
    out = check_ran(run_example(name, "--help", cwd=tmp_path))
    assert "--smoke" in out and "--output" in out


def stub_serving(requests: list):
    """A handler that answers TF Serving's REST predict with a fixed
    output per input, and records each request in ``requests``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            size = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(size))
            requests.append((self.path, body))
            answer = [{"class_ids": 7}] * len(body["instances"])
            data = json.dumps({"predictions": answer}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def test_serve_tf_serving_sends_a_rest_request(tmp_path):
    requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), stub_serving(requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    folder = tmp_path / "serve"
    args = ["--smoke", "--output", str(folder)]
    args += ["--host", f"127.0.0.1:{server.server_port}"]
    try:
        out = check_ran(run_example("serve_tf_serving.py", *args, cwd=tmp_path))
    finally:
        server.shutdown()
    [(path, body)] = requests
    assert path == "/v1/models/digits:predict"
    assert body["signature_name"] == "serving_default"
    image = body["instances"][0]
    assert len(body["instances"]) == 2
    assert (len(image), len(image[0]), len(image[0][0])) == (8, 8, 1)
    assert "docker run" in out and "tensorflow/serving" in out
    assert out.count("class_ids: 7") == 2
    assert (folder / "serving" / "digits" / "1" / "saved_model.pb").is_file()
    assert json.loads((folder / "request.json").read_text()) == body
