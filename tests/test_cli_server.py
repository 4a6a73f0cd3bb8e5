"""`ldn-app assess --server`: the same output as on files, read from a live FHIR server."""

from __future__ import annotations

import json

import pytest

from smart_app.cli import main
from smart_app.fhir.load import load_bundles
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR, load_sample

pytestmark = pytest.mark.live
AS_OF = SAMPLE_AS_OF.isoformat()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("patient", ["ldn-medication-reference", "ldn-tramadol-5-days", "ldn-crohns-fibromyalgia",
                                     "ldn-opioid-status-unknown"])
def test_assess_on_a_server_prints_the_same_json_as_on_the_file(fhir_server, capsys, patient):
    load_bundles(fhir_server.base_url, {patient: load_sample(patient)})

    from_file = run(capsys, "assess", str(SAMPLES_DIR / f"{patient}.json"), "--as-of", AS_OF, "--json")
    from_server = run(capsys, "assess", "--server", fhir_server.base_url, "--patient", patient, "--as-of", AS_OF,
                      "--json")

    assert from_server == from_file and from_file[0] == 0
    assert json.loads(from_file[1])["patient"] == patient


def test_assess_on_a_server_prints_the_same_text_as_on_the_file(fhir_server, capsys):
    load_bundles(fhir_server.base_url, {"ms": load_sample("ldn-ms")})

    from_file = run(capsys, "assess", str(SAMPLES_DIR / "ldn-ms.json"), "--as-of", AS_OF)
    from_server = run(capsys, "assess", "--server", fhir_server.base_url, "--patient", "ldn-ms", "--as-of", AS_OF)

    assert from_server == from_file and "Patient ldn-ms: ELIGIBLE-WITH-CAUTIONS" in from_file[1]


def test_assess_through_an_authorizing_server_uses_the_token_file(sandbox, capsys, tmp_path):
    from smart_app.sandbox.ehr import Context

    state = sandbox.ehr_app.config["SANDBOX_STATE"]
    token, _ = state.issue(Context("ldn-app", ("patient/*.rs",), "ldn-fibromyalgia", True), 300, refresh=False)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")

    code, out, _ = run(capsys, "assess", "--server", sandbox.iss, "--patient", "ldn-fibromyalgia", "--json",
                       "--token-file", str(token_file))

    assert code == 0 and json.loads(out)["decision"] == "eligible"


def test_without_a_token_the_refused_read_is_cannot_determine_with_the_reason(sandbox, capsys):
    code, out, _ = run(capsys, "assess", "--server", sandbox.iss, "--patient", "ldn-fibromyalgia", "--json")

    body = json.loads(out)
    assert code == 0 and body["decision"] == "cannot-determine"
    unreadable = [f for f in body["findings"] if f["code"] == "data-unreadable"]
    assert unreadable and "the EHR refused a read" in unreadable[0]["text"] and body["medications"] == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--server", "http://fhir.test/fhir"], "--server and --patient go together"),
    (["--patient", "x"], "--server and --patient go together"),
    ([], "give Bundle FILEs, or --server BASE --patient ID"),
])
def test_assess_with_half_a_server_request_is_refused_with_a_message(capsys, argv, message):
    code, out, err = run(capsys, "assess", *argv)

    assert code == 1 and out == "" and message in err
