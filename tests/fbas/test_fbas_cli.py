"""`synod fbas`: exit codes, JSON output re-checked independently, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from synod.cli.main import cli
from synod.fbas.load import decode_public_key
from synod.fbas.synthetic import symmetric_network
from synod.quorum.qset import QuorumSet, is_quorum

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fbas"


def data_file(name: str) -> str:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared FBAS data not found at {path} (expected ../shared/data/fbas)")
    return str(path)


def run(*arguments: str) -> Any:
    return CliRunner().invoke(cli, ["fbas", *arguments], catch_exceptions=False)


def write(tmp_path: Path, document: Any, name: str = "network.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def stellarbeat_qsets(nodes: list[dict[str, Any]]) -> dict[bytes, QuorumSet | None]:
    def convert(raw: dict[str, Any]) -> QuorumSet:
        return QuorumSet(
            threshold=raw["threshold"],
            validators=tuple(decode_public_key(k) for k in raw["validators"]),
            inner_sets=tuple(convert(q) for q in raw.get("innerQuorumSets", [])),
        )

    result: dict[bytes, QuorumSet | None] = {}
    for node in nodes:
        qset = node.get("quorumSet")
        empty = not qset or not (qset["validators"] or qset.get("innerQuorumSets"))
        result[decode_public_key(node["publicKey"])] = None if empty else convert(qset)
    return result


def test_check_reports_disjoint_quorums_with_exit_code_one() -> None:
    path = data_file("broken.json")
    result = run("check", path, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["quorumIntersection"] is False
    qsets = stellarbeat_qsets(json.loads(Path(path).read_text()))
    first, second = (
        frozenset(decode_public_key(n["publicKey"]) for n in quorum)
        for quorum in document["disjointQuorums"]
    )
    assert is_quorum(first, qsets.get) and is_quorum(second, qsets.get)
    assert not first & second


def test_check_exits_zero_when_intersection_holds() -> None:
    result = run("check", data_file("correct.json"))
    assert result.exit_code == 0
    assert "holds" in result.stdout


def test_buffers_of_the_2024_top_tier_in_json() -> None:
    path = data_file("stellarbeat_top_tier_2024-09.json")
    blocking = json.loads(run("blocking", path, "--json", "--group-by", "org").stdout)
    assert blocking["minimumSize"] == 3 and len(blocking["sets"][0]["groups"]) == 3
    splitting = json.loads(run("splitting", path, "--json").stdout)
    assert splitting["minimumSize"] == 3 and len(splitting["sets"][0]["nodes"]) == 3
    tier = json.loads(run("top-tier", path, "--json").stdout)
    assert tier["size"] == 23


def test_all_lists_distinct_minimum_sets(tmp_path: Path) -> None:
    nodes, orgs = symmetric_network(4, 3)
    path = write(tmp_path, nodes)
    orgs_path = write(tmp_path, orgs, "orgs.json")
    result = run(
        "blocking", path, "--orgs", orgs_path, "--group-by", "org", "--all", "10", "--json"
    )
    document = json.loads(result.stdout)
    # 4 organisations, threshold 3: any 2 of the 4 organisations block: C(4, 2) = 6 sets
    assert document["minimumSize"] == 2
    assert document["complete"] is True
    assert len({tuple(sorted(s["groups"])) for s in document["sets"]}) == 6


def test_tables_are_the_default_output(tmp_path: Path) -> None:
    nodes, orgs = symmetric_network(3, 3)
    path = write(tmp_path, nodes)
    result = run(
        "splitting", path, "--orgs", write(tmp_path, orgs, "orgs.json"), "--group-by", "org"
    )
    assert result.exit_code == 0
    assert "Smallest splitting set: 1 org groups" in result.stdout
    assert "Org " in result.stdout


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([{"publicKey": "GBAD"}], "node #0, field publicKey"),
        ({"nodes": [{"node": "x", "qset": {"t": 1, "v": []}}]}, "field node"),
        ("not a list", "expected a JSON array"),
    ],
)
def test_malformed_input_gives_a_message_and_exit_code_two(
    tmp_path: Path, document: Any, expected: str
) -> None:
    result = run("check", write(tmp_path, document))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("organisations", "expected"),
    [
        ({"id": "x"}, "expected a JSON array of organisations, got dict"),
        (
            [{"id": "x", "validators": "abc"}],
            "organisation #0, field validators: expected a list, got str",
        ),
    ],
)
def test_a_malformed_organisations_file_is_named_not_the_nodes_file(
    tmp_path: Path, organisations: Any, expected: str
) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(symmetric_network(3)[0]))
    orgs = tmp_path / "orgs.json"
    orgs.write_text(json.dumps(organisations))
    result = run("splitting", str(nodes), "--orgs", str(orgs))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {orgs}: {expected}"


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"publicKey": \n')
    result = run("blocking", str(path))
    assert result.exit_code == 2
    assert "not valid JSON (line 2" in result.stderr


def test_semantics_switch_reaches_the_loader(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(3, 3)
    nodes[0]["quorumSet"] = {"threshold": 9, "validators": [], "innerQuorumSets": []}
    nodes[1]["quorumSet"]["threshold"] = 7  # insane: 3 entries
    path = write(tmp_path, nodes)
    assert run("check", path).exit_code == 2
    result = run("check", path, "--insane", "exclude", "--missing-qset", "unconstrained", "--json")
    assert result.exit_code == 1  # node 0 is a quorum alone now
    assert json.loads(result.stdout)["quorumIntersection"] is False


def test_stellar_core_format_is_detected(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(2, 1)
    keys = [n["publicKey"] for n in nodes]
    document = {"nodes": [{"node": k, "qset": {"t": 2, "v": keys}} for k in keys]}
    result = run("top-tier", write(tmp_path, document), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["size"] == 2


def test_graph_writes_self_contained_html(tmp_path: Path) -> None:
    nodes, orgs = symmetric_network(3, 3)
    output = tmp_path / "trust.html"
    result = run(
        "graph",
        write(tmp_path, nodes),
        "--orgs",
        write(tmp_path, orgs, "o.json"),
        "-o",
        str(output),
    )
    assert result.exit_code == 0
    text = output.read_text()
    assert "<svg" in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")
    assert text.count("</title></circle>") == 9  # one tooltip per node


def test_graph_rejects_an_unknown_output_type(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(2, 1)
    result = run("graph", write(tmp_path, nodes), "-o", str(tmp_path / "x.svg"))
    assert result.exit_code == 2
    assert ".png or .html" in result.stderr


def test_graph_writes_a_png_image(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    nodes, _ = symmetric_network(3, 3)
    output = tmp_path / "trust.png"
    result = run("graph", write(tmp_path, nodes), "-o", str(output))
    assert result.exit_code == 0
    assert output.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_organisation_labels_fall_back_to_the_shared_home_domain(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(3, 3)
    document = json.loads(
        run("top-tier", write(tmp_path, nodes), "--json", "--group-by", "org").stdout
    )
    assert {g["group"] for g in document["groups"]} == {
        "org0.example",
        "org1.example",
        "org2.example",
    }


def test_synod_network_file_is_analysed(tmp_path: Path) -> None:
    scp = pytest.importorskip("synod.cli.scp")
    if not hasattr(scp, "load_config"):
        pytest.skip("synod.cli.scp has no load_config")
    directory = tmp_path / "net"
    created = CliRunner().invoke(cli, ["scp", "init", str(directory), "--organisations", "4"])
    if created.exit_code != 0:
        pytest.skip(f"synod scp init failed: {created.output}")
    path = str(directory / "network.toml")
    assert run("check", path).exit_code == 0
    document = json.loads(run("blocking", path, "--group-by", "org", "--json").stdout)
    # 4 organisations of 3, each node trusting 3 of 4 organisations at 2 of 3: failing
    # 2 organisations leaves only 2, short of the threshold.
    assert document["minimumSize"] == 2
    wrong = tmp_path / "other.toml"
    wrong.write_text("")
    result = run("check", str(wrong))
    assert result.exit_code == 2 and "network.toml" in result.stderr


@pytest.mark.parametrize("command", ["check", "top-tier", "blocking", "splitting"])
def test_names_from_the_data_file_are_printed_as_text_not_markup(
    tmp_path: Path, command: str
) -> None:
    """A node named `[/evil]` once crashed the table printer with exit code 1, the code
    that means "intersection broken" to monitoring."""
    nodes, _ = symmetric_network(4, 1)
    for number, node in enumerate(nodes):
        node["name"] = "[/evil]" if number == 0 else f"[bold]n{number}"
    result = run(command, write(tmp_path, nodes))
    assert result.exit_code == 0, result.output
    if command != "check":
        assert "[/evil]" in result.stdout or "[bold]n" in result.stdout


def test_a_network_file_larger_than_the_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    from synod.cli.fbas import MAX_INPUT_BYTES

    path = tmp_path / "huge.json"
    with path.open("wb") as handle:  # sparse: no disk used, but read it would be
        handle.truncate(MAX_INPUT_BYTES + 1)
    result = run("check", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {path}: larger than 256 MiB"
