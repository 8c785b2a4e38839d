#!/usr/bin/env python3
"""Checks the deployment files in infra/ (run by tests/infra.rs; needs cfn-lint from tests/requirements.txt).

    python tests/infra_check.py --root . --flowspike target/debug/flowspike [--only lint,iam,docker,cli]
                                [--template FILE ...] [--dockerfile FILE]

Checks (each prints `ok <check> <file>` or `FAIL <check> <file>: <reason>` lines; exit 1 on any failure):

lint    cfn-lint (errors, warnings and informational findings) on every template; a finding fails unless its
        rule is in IGNORED_RULES below, with a reason (the list is empty today).
iam     every policy statement in every template (role policies, managed policies, bucket policies, ...):
        no NotAction/NotResource; no wildcard action (`*`, `svc:*`, `svc:Get*`) in an Allow; and no wildcard
        resource (`*`, or an ARN whose resource part is only `*`, e.g. `arn:aws:s3:::*`) unless every action of
        the statement is in WILDCARD_RESOURCE_ACTIONS, the actions AWS authorizes on no resource at all.
docker  infra/Dockerfile: multi-stage (the final stage copies from an earlier one); every base image pinned by
        digest or an exact version tag (never `latest` or a floating tag such as `trixie-slim`); the final stage
        runs as a non-root USER; a HEALTHCHECK (or an ECS task-definition healthCheck in every task definition);
        ENTRYPOINT is flowspike; the dependency layer copies the Cargo.toml of every workspace member.
cli     every ECS task definition runs a real `flowspike` subcommand: each `--flag` of its command and each
        FLOWSPIKE_* variable of its environment is one that `flowspike <subcommand> --help` lists (`[env: ...]`);
        every required option is given (flag or variable); the state is on S3; the health check calls
        /healthz on the port of FLOWSPIKE_METRICS_ADDR.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

# Actions that AWS authorizes on no resource: the Service Authorization Reference lists no resource type for
# them, so a policy must say `Resource: "*"`. Keep this list short and give the source of each entry.
WILDCARD_RESOURCE_ACTIONS = {
    # Amazon ECR reference: GetAuthorizationToken has no resource type (the registry token is account-wide).
    # Used by the ECS task execution role to pull the image (AmazonECSTaskExecutionRolePolicy does the same).
    "ecr:GetAuthorizationToken": "registry login token is account-wide (no resource type)",
    # CloudWatch permissions reference: PutMetricData is authorized with Resource "*" (restrict it with the
    # cloudwatch:namespace condition key instead). Not used by the templates today: the consumer exposes
    # Prometheus /metrics and the alarms use AWS/Kinesis, Container Insights and log metric filters.
    "cloudwatch:PutMetricData": "no resource type (use the cloudwatch:namespace condition key)",
}

# cfn-lint rules ignored on purpose, with the reason. Empty: the templates are clean at every level.
IGNORED_RULES: dict[str, str] = {}

# Images whose tags are semantic versions: an exact pin needs all three components (rust:1.95 floats).
SEMVER_IMAGES = {"rust", "golang", "python", "node"}

FLOWSPIKE_BINARY_NAMES = {"flowspike", "/usr/local/bin/flowspike"}


class Report:
    def __init__(self, root: Path):
        self.root = root
        self.failures = 0

    def name(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def ok(self, check: str, path: Path, note: str = "") -> None:
        print(f"ok {check} {self.name(path)}" + (f" ({note})" if note else ""))

    def fail(self, check: str, path: Path, reason: str) -> None:
        self.failures += 1
        print(f"FAIL {check} {self.name(path)}: {reason}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- templates
def load_template(path: Path) -> dict:
    from cfnlint.decode import decode  # cfn-lint's loader: YAML short forms (!Sub ...) become Fn:: keys

    template, matches = decode(str(path))
    if matches or template is None:
        raise ValueError("; ".join(str(m) for m in matches) or "cannot parse")
    return template


def text_of(value) -> str | None:
    """The literal text of a resource/value: strings, Fn::Sub, Fn::Join; None for Ref/GetAtt and others."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "Fn::Sub":
            return v if isinstance(v, str) else (v[0] if v and isinstance(v[0], str) else None)
        if k == "Fn::Join" and isinstance(v, list) and len(v) == 2 and isinstance(v[1], list):
            return v[0].join(text_of(p) or "${X}" for p in v[1])
    return None


def branches(value):
    """Both branches of Fn::If (recursively), every element of a list; AWS::NoValue is dropped."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        _, a, b = value["Fn::If"]
        yield from branches(a)
        yield from branches(b)
    elif isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    elif isinstance(value, list):
        for v in value:
            yield from branches(v)
    else:
        yield value


# ---------------------------------------------------------------------------------------------- lint
def check_lint(report: Report, templates: list[Path]) -> None:
    exe = Path(sys.executable).parent / "cfn-lint"
    cmd = [str(exe) if exe.exists() else (shutil.which("cfn-lint") or "cfn-lint")]
    cmd += ["--format", "parseable", "--include-checks", "I"]
    if IGNORED_RULES:
        cmd += ["--ignore-checks", *sorted(IGNORED_RULES)]
    for t in templates:
        try:
            out = subprocess.run([*cmd, "--", str(t)], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            report.fail("lint", t, "cfn-lint not found (bash tests/run.sh installs it into .venv)")
            continue
        findings = [line for line in out.stdout.splitlines() if line.strip()]
        if out.returncode != 0 or findings:
            detail = "\n  ".join(findings or out.stderr.strip().splitlines()[-5:])
            report.fail("lint", t, f"cfn-lint exit {out.returncode}:\n  {detail}")
        else:
            report.ok("lint", t)


# ---------------------------------------------------------------------------------------------- iam
def policy_documents(node, path="$"):
    """Yields (path, document) for every dict with a `Statement` key anywhere in the template."""
    if isinstance(node, dict):
        if "Statement" in node:
            yield path, node
        for k, v in node.items():
            yield from policy_documents(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from policy_documents(v, f"{path}[{i}]")


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def is_wildcard_resource(value) -> bool:
    text = text_of(value)
    if text is None:
        return False  # Ref / GetAtt of a named resource
    bare = re.sub(r"\$\{[^}]*\}", "X", text)
    return bare == "*" or re.fullmatch(r"arn:[^:]*:[^:]*:[^:]*:[^:]*:\*", bare) is not None


def check_iam(report: Report, templates: list[Path]) -> None:
    for t in templates:
        try:
            template = load_template(t)
        except ValueError as e:
            report.fail("iam", t, f"cannot load: {e}")
            continue
        bad_before = report.failures
        exceptions = set()
        statements = 0
        for path, doc in policy_documents(template.get("Resources", {}), "Resources"):
            for i, st in enumerate(branches(doc["Statement"])):
                if not isinstance(st, dict):
                    continue
                statements += 1
                where = f"{path}.Statement[{i}]" + (f" ({st['Sid']})" if "Sid" in st else "")
                for key in ("NotAction", "NotResource"):
                    if key in st:
                        report.fail("iam", t, f"{where}: {key} grants everything but a list; name what is allowed")
                actions = [a for a in branches(as_list(st.get("Action", []))) if isinstance(a, str)]
                if st.get("Effect") == "Allow":
                    for a in actions:
                        if "*" in a:
                            report.fail("iam", t, f"{where}: wildcard action {a!r} in an Allow")
                if "Resource" not in st:
                    continue  # trust policies: Principal, no Resource
                wild = [r for r in branches(as_list(st["Resource"])) if is_wildcard_resource(r)]
                if not wild:
                    continue
                outside = [a for a in actions if a not in WILDCARD_RESOURCE_ACTIONS]
                if outside or not actions:
                    report.fail(
                        "iam", t,
                        f"{where}: Resource {text_of(wild[0])!r} for {', '.join(outside) or 'no action'}: "
                        "name the resources (wildcard resources are only for "
                        f"{', '.join(sorted(WILDCARD_RESOURCE_ACTIONS))})",
                    )
                else:
                    exceptions.update(actions)
        if statements == 0:
            print(f"note iam {report.name(t)}: no policy statements")
        if report.failures == bad_before:
            note = "wildcard resource only for: " + ", ".join(sorted(exceptions)) if exceptions else ""
            report.ok("iam", t, note)


# ---------------------------------------------------------------------------------------------- docker
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def pinned(image: str) -> str | None:
    """None if the image reference is pinned, else why not."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return None
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if not tag:
        return "no tag (means latest)"
    if tag == "latest":
        return "tag latest"
    base = name.split("/")[-1]
    parts = 3 if base in SEMVER_IMAGES else 2
    if not re.match(r"^v?\d+(\.\d+){%d}(?![.\d])" % (parts - 1), tag):
        return f"tag {tag!r} is not an exact version ({parts} components) and there is no @sha256 digest"
    return None


def task_definitions(template: dict):
    for name, res in template.get("Resources", {}).items():
        if isinstance(res, dict) and res.get("Type") == "AWS::ECS::TaskDefinition":
            yield name, res.get("Properties", {})


def check_docker(report: Report, dockerfile: Path, templates: list[Path]) -> None:
    if not dockerfile.exists():
        report.fail("docker", dockerfile, "missing")
        return
    bad_before = report.failures
    ins = dockerfile_instructions(dockerfile)
    stages: list[dict] = []
    for word, args in ins:
        if word == "FROM":
            toks = [a for a in args.split() if not a.startswith("--")]
            image = toks[0]
            alias = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, args))
    if len(stages) < 2:
        report.fail("docker", dockerfile, f"not multi-stage ({len(stages)} stage)")
    names = set()
    for s in stages:
        if s["image"] in names or s["image"] == "scratch":
            pass
        else:
            why = pinned(s["image"])
            if why:
                report.fail("docker", dockerfile, f"base image {s['image']} is not pinned: {why}")
        if s["alias"]:
            names.add(s["alias"])
    if stages:
        final = stages[-1]
        users = [a for w, a in final["ins"] if w == "USER"]
        if not users:
            report.fail("docker", dockerfile, "the final stage has no USER (runs as root)")
        else:
            user = users[-1].split(":")[0]
            if user in ("root", "0"):
                report.fail("docker", dockerfile, f"the final stage runs as {users[-1]!r} (root)")
        copies_from = [a for w, a in final["ins"] if w == "COPY" and "--from=" in a]
        if len(stages) >= 2 and not copies_from:
            report.fail("docker", dockerfile, "the final stage copies nothing from a build stage")
        entry = [a for w, a in final["ins"] if w == "ENTRYPOINT"]
        if not entry or "flowspike" not in entry[-1]:
            report.fail("docker", dockerfile, "ENTRYPOINT is not the flowspike binary")
        health = [a for w, a in final["ins"] if w == "HEALTHCHECK"]
        has_health = bool(health) and not health[-1].upper().startswith("NONE")
        if has_health and "/healthz" not in health[-1]:
            report.fail("docker", dockerfile, "HEALTHCHECK does not call /healthz")
        if not has_health:
            tds = [(t, n, p) for t in templates for n, p in task_definitions(load_template(t))]
            missing = [n for t, n, p in tds
                       if not all("HealthCheck" in c for c in p.get("ContainerDefinitions", []))]
            if not tds or missing:
                report.fail("docker", dockerfile, "no HEALTHCHECK and no ECS healthCheck in "
                            + (", ".join(missing) or "any task definition"))
    # The dependency layer must know every workspace member, or `cargo build` fails in the image.
    cargo = report.root / "Cargo.toml"
    if cargo.exists():
        members = tomllib.loads(cargo.read_text()).get("workspace", {}).get("members", [])
        copied = {a.split()[0] for w, a in ins if w == "COPY" and a.split()}
        for m in members:
            if m != "." and f"{m}/Cargo.toml" not in copied:
                report.fail("docker", dockerfile, f"workspace member {m} is not copied ({m}/Cargo.toml)")
    if report.failures == bad_before:
        report.ok("docker", dockerfile, f"{len(stages)} stages, bases: "
                  + ", ".join(s["image"] for s in stages if s["image"] not in names))


# ---------------------------------------------------------------------------------------------- cli
class Help:
    """The options of `flowspike <sub> --help`: flag -> env var (or None), and the required flags."""

    def __init__(self, binary: Path, sub: str):
        out = subprocess.run([str(binary), sub, "--help"], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise ValueError(f"`flowspike {sub} --help` failed: {out.stderr.strip()[:300]}")
        self.flags: dict[str, str | None] = {}
        current = None
        for line in out.stdout.splitlines():
            m = re.match(r"^\s+(?:-[A-Za-z], )?(--[a-z0-9][a-z0-9-]*)", line)
            if m:
                current = m.group(1)
                self.flags[current] = None
            env = re.search(r"\[env: ([A-Z0-9_]+)=", line)
            if env and current:
                self.flags[current] = env.group(1)
        usage = next((l for l in out.stdout.splitlines() if l.startswith("Usage:")), "")
        usage = re.sub(r"\[[^\]]*\]", "", usage)  # drop optional parts
        self.required = re.findall(r"(--[a-z0-9-]+) <", usage)
        self.envs = {e: f for f, e in self.flags.items() if e}


def subcommands(binary: Path) -> set[str]:
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False).stdout
    section = out.split("Commands:", 1)[-1].split("Options:", 1)[0]
    return {m.group(1) for m in re.finditer(r"(?m)^\s{2}([a-z][a-z0-9-]*)\s", section)}


def check_cli(report: Report, templates: list[Path], binary: Path) -> None:
    if not binary.exists():
        for t in templates:
            report.fail("cli", t, f"flowspike binary {binary} not found")
        return
    known_subs = subcommands(binary)
    total = 0
    for t in templates:
        template = load_template(t)
        bad_before = report.failures
        for td_name, props in task_definitions(template):
            for c in props.get("ContainerDefinitions", []):
                total += 1
                where = f"{td_name}/{c.get('Name', '?')}"
                command = list(c.get("Command", []))
                if any(not isinstance(x, str) for x in command):
                    report.fail("cli", t, f"{where}: the command must be literal strings")
                    continue
                if command and command[0] in FLOWSPIKE_BINARY_NAMES:
                    command = command[1:]
                if not command or command[0] not in known_subs:
                    report.fail("cli", t, f"{where}: command {command!r} does not start with a flowspike "
                                f"subcommand ({', '.join(sorted(known_subs))})")
                    continue
                sub = command[0]
                try:
                    help_ = Help(binary, sub)
                except ValueError as e:
                    report.fail("cli", t, f"{where}: {e}")
                    continue
                given = set()
                for tok in command[1:]:
                    if tok.startswith("--"):
                        flag = tok.split("=", 1)[0]
                        if flag not in help_.flags:
                            report.fail("cli", t, f"{where}: `flowspike {sub}` has no option {flag}")
                        given.add(flag)
                env: dict[str, object] = {}
                for e in branches(c.get("Environment", [])):
                    if not isinstance(e, dict) or "Name" not in e:
                        continue
                    name = e["Name"]
                    if name in env:
                        report.fail("cli", t, f"{where}: {name} is set twice")
                    env[name] = e.get("Value")
                    if name.startswith("FLOWSPIKE_"):
                        if name not in help_.envs:
                            report.fail("cli", t, f"{where}: `flowspike {sub}` reads no variable {name} "
                                        f"(it reads {', '.join(sorted(help_.envs))})")
                        else:
                            given.add(help_.envs[name])
                for flag in help_.required:
                    if flag not in given:
                        report.fail("cli", t, f"{where}: required option {flag} is set neither in the command "
                                    f"nor as {help_.flags.get(flag)}")
                state = env.get("FLOWSPIKE_STATE")
                if "--state" in command:
                    i = command.index("--state")
                    state = command[i + 1] if i + 1 < len(command) else None
                state_text = text_of(state) if state is not None else None
                if state is not None and (state_text is None or not state_text.startswith("s3://")):
                    report.fail("cli", t, f"{where}: the state must be s3://... (a container's disk is ephemeral)")
                hc = c.get("HealthCheck")
                if hc:
                    hc_text = " ".join(x for x in hc.get("Command", []) if isinstance(x, str))
                    metrics = text_of(env.get("FLOWSPIKE_METRICS_ADDR")) or "0.0.0.0:9090"
                    port = metrics.rsplit(":", 1)[-1]
                    if "/healthz" not in hc_text or f":{port}/" not in hc_text:
                        report.fail("cli", t, f"{where}: healthCheck {hc_text!r} does not call /healthz on "
                                    f"port {port} (FLOWSPIKE_METRICS_ADDR)")
        if report.failures == bad_before:
            report.ok("cli", t)
    if total == 0:
        report.fail("cli", templates[0] if templates else Path("infra"), "no ECS container definition found")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--flowspike", type=Path, help="the flowspike binary (for the cli check)")
    ap.add_argument("--only", default="lint,iam,docker,cli")
    ap.add_argument("--template", type=Path, action="append", help="default: infra/cloudformation/*.y*ml")
    ap.add_argument("--dockerfile", type=Path, help="default: infra/Dockerfile")
    a = ap.parse_args()
    report = Report(a.root)
    templates = a.template or sorted(
        p for p in (a.root / "infra" / "cloudformation").glob("*") if p.suffix in (".yaml", ".yml", ".json")
    )
    if not templates:
        print("FAIL: no templates found under infra/cloudformation", file=sys.stderr)
        return 1
    only = set(a.only.split(","))
    unknown = only - {"lint", "iam", "docker", "cli"}
    if unknown:
        ap.error(f"unknown checks: {', '.join(sorted(unknown))}")
    if "lint" in only:
        check_lint(report, templates)
    if "iam" in only:
        check_iam(report, templates)
    if "docker" in only:
        check_docker(report, a.dockerfile or a.root / "infra" / "Dockerfile", templates)
    if "cli" in only:
        if a.flowspike is None:
            ap.error("the cli check needs --flowspike BINARY")
        check_cli(report, templates, a.flowspike)
    if report.failures:
        print(f"{report.failures} infra check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
