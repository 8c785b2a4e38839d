#!/usr/bin/env python3
"""Checks the deployment files in infra/ (run by tests/infra.rs; needs cfn-lint from tests/requirements.txt).

    python tests/infra_check.py --root . --flowspike target/debug/flowspike [--only lint,iam,docker,cli,modes]
                                [--template FILE ...] [--dockerfile FILE]

Checks (each prints `ok <check> <file>` or `FAIL <check> <file>: <reason>` lines; exit 1 on any failure):

lint    cfn-lint (errors, warnings and informational findings) on every template; a finding fails unless its
        rule is in IGNORED_RULES below, with a reason (the list is empty today). A template over
        INLINE_TEMPLATE_BYTES needs --s3-bucket in docs/deploy.md's deploy command.
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
modes   the template resolved for each deployment mode (MODES: parameter values; conditions evaluated, Fn::If
        branches chosen, resources of false conditions dropped; the Rules accept each mode, and every
        condition is true in one mode and false in another): enhanced fan-out sets FLOWSPIKE_EFO=true on
        the consumer, its task role grants CONSUMER_ACTIONS the code calls on the consumer ARN
        `<stream>/consumer/<name>:*` (SubscribeToShard only there) and no alarm or scaling policy reads a
        GetRecords metric (missing under enhanced fan-out).
        Alarms, per mode, evaluated on ALARM_SCENARIOS (metric values; None: no data; metric math computed):
        none fires on a new stack without data or a service scaled to 0, none fires on a healthy one, and the
        alarm each scenario names fires. Autoscaling: the service sets no DesiredCount (the policy owns it),
        and the template's Rules accept AutoScalingMaxTasks exactly up to the shard count (SourceShardCount
        when PROVISIONED, 4 for ON_DEMAND).
        IAM from the code: the AWS calls the Rust source can make (every `.op()` of an aws_sdk_* client whose
        name is an operation of that SDK crate, as listed in its src/operation/ in the cargo registry, in a
        file that uses the crate; `#[cfg(test)]` code left out), each mapped to `service:Action` (PascalCase,
        or ACTION_ALIASES where IAM names it otherwise) and placed in the modes where it runs by
        CALL_LOCATIONS (file and enclosing function -> feature; MODES give each mode's features). Per mode,
        the derived actions must be granted to the mode's task role, except NOT_GRANTED (with the reason),
        and the role grants nothing else, except GRANTED_EXTRA (empty). A call in a file CALL_LOCATIONS does
        not place fails too. The Firehose endpoint: see check_firehose.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
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

# CloudFormation's limit for a template passed inline (TemplateBody); larger ones go through S3.
INLINE_TEMPLATE_BYTES = 51_200

# cfn-lint rules ignored on purpose, with the reason. Empty: the templates are clean at every level.
IGNORED_RULES: dict[str, str] = {}

# Images whose tags are semantic versions: an exact pin needs all three components (rust:1.95 floats).
SEMVER_IMAGES = {"rust", "golang", "python", "node"}

FLOWSPIKE_BINARY_NAMES = {"flowspike", "/usr/local/bin/flowspike"}

# Deployment modes of infra/cloudformation/flowspike.yaml: parameter values over the defaults.
MODES: dict[str, dict[str, str]] = {
    "polling": {},
    "efo": {"EnhancedFanOut": "true"},
    "leases": {"CreateLeaseTable": "true", "DesiredCount": "2"},
    "efo+leases+autoscaling": {"EnhancedFanOut": "true", "CreateLeaseTable": "true", "EnableAutoScaling": "true"},
    "replay": {"ArchiveBucketName": "flow-log-archive", "ArchivePrefix": "AWSLogs/"},
    "firehose": {"FirehoseEndpoint": "true", "FirehoseDomainName": "flowspike.example.com",
                 "FirehoseCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d",
                 "FirehoseAlbSubnetIds": "subnet-0ccc,subnet-0ddd", "FlowLogVpcId": "vpc-0123456789abcdef0"},
    # The finding sinks (Security Hub, EventBridge) of the consumer and of the Firehose endpoint.
    "sinks": {"SecurityHubFindings": "true", "EventBusName": "security-findings", "OutputFormat": "ocsf"},
    "firehose+sinks": {"FirehoseEndpoint": "true", "FirehoseDomainName": "flowspike.example.com",
                       "FirehoseCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d",
                       "FlowLogVpcId": "vpc-0123456789abcdef0",
                       "SecurityHubFindings": "true", "EventBusName": "default"},
    # Every option at once (the consumer's view), so that each condition is true in some mode.
    "all-options": {"EnhancedFanOut": "true", "CreateLeaseTable": "true", "EnableAutoScaling": "true",
                    "SourceStreamMode": "PROVISIONED", "SourceShardCount": "4", "AutoScalingMaxTasks": "4",
                    "CreateVpcFlowLog": "true", "FlowLogVpcId": "vpc-0123456789abcdef0",
                    "FlowLogFormat": "${version} ${srcaddr} ${dstaddr} ${start} ${action} ${log-status}",
                    "AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:oncall",
                    "ArchiveBucketName": "flow-log-archive", "FirehoseEndpoint": "true",
                    "FirehoseDomainName": "flowspike.example.com",
                    "FirehoseCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d",
                    "SecurityHubFindings": "true", "EventBusName": "security-findings", "OutputFormat": "asff"},
}
# The `flowspike` subcommand whose task definition and role a mode is about (default: consume).
MODE_COMMAND = {"replay": "replay", "firehose": "serve-firehose", "firehose+sinks": "serve-firehose"}
# Kinesis actions authorized on the stream consumer resource type (Service Authorization Reference).
CONSUMER_ACTIONS = {"kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"}
# What the replay task may do on the archive bucket.
ARCHIVE_ACTIONS = {"s3:ListBucket", "s3:GetObject"}

# What runs in each mode (the features of CALL_LOCATIONS): `consume` polls (`poll`) or uses enhanced
# fan-out (`efo`), with or without leases; every mode keeps its state on S3 (`s3state`) and sends spikes to
# the output stream (`spikes`).
MODE_FEATURES: dict[str, set[str]] = {
    "polling": {"consume", "poll", "s3state", "spikes"},
    "efo": {"consume", "efo", "s3state", "spikes"},
    "leases": {"consume", "poll", "lease", "s3state", "spikes"},
    "efo+leases+autoscaling": {"consume", "efo", "lease", "s3state", "spikes"},
    # `replay s3://...`: reads the archive and writes the state through the same S3 code.
    "replay": {"replay", "s3state"},
    # `serve-firehose`: pushed requests, the same state and spike stream as the consumer.
    "firehose": {"firehose", "s3state", "spikes"},
    # --securityhub and --eventbridge-bus: the two finding sinks beside the spike stream.
    "sinks": {"consume", "poll", "s3state", "spikes", "securityhub", "eventbridge"},
    "firehose+sinks": {"firehose", "s3state", "spikes", "securityhub", "eventbridge"},
    "all-options": {"consume", "efo", "lease", "s3state", "spikes", "securityhub", "eventbridge"},
}

# Where the AWS calls of the source run: (fnmatch pattern of the file under the sources root, regex of the enclosing function
# or None for any, feature). First match wins; a file with calls that no entry matches fails the check.
CALL_LOCATIONS: list[tuple[str, str | None, str]] = [
    # `consume --efo`: the consumer's registration and the subscription loop (with the GetRecords call that
    # asks whether a shard at its tip ended).
    ("crates/consumer/src/kinesis/register.rs", None, "efo"),
    ("crates/consumer/src/kinesis/efo.rs", None, "efo"),
    # The polling loop (GetRecords between iterators).
    ("crates/consumer/src/kinesis/polling.rs", None, "poll"),
    # The same before kinesis.rs was split into kinesis/ (one file, told apart by function).
    ("crates/consumer/src/kinesis.rs", r"run_efo|register_consumer", "efo"),
    ("crates/consumer/src/kinesis.rs", r"run_polling", "poll"),
    # Every reader: ListShards, and GetShardIterator/GetRecords to see whether a shard at its tip ended.
    ("crates/consumer/**", None, "consume"),
    ("crates/lease/**", None, "lease"),
    ("crates/firehose/**", None, "firehose"),
    # The spike sink (PutRecords to the output stream).
    ("crates/aws/src/kinesis.rs", None, "spikes"),
    # The finding sinks: BatchImportFindings (--securityhub), PutEvents (--eventbridge-bus).
    ("crates/aws/src/securityhub.rs", None, "securityhub"),
    ("crates/aws/src/eventbridge.rs", None, "eventbridge"),
    # S3::create_bucket: a helper of the integration tests (tests/*.rs, on moto_server); no command calls it.
    ("crates/aws/src/lib.rs", r"create_bucket", "test-only"),
    # The S3 store (state) and S3 archive (replay input).
    ("crates/aws/src/lib.rs", None, "s3state"),
]

# API operations IAM authorizes under another name (Service Authorization Reference).
ACTION_ALIASES: dict[str, set[str]] = {
    "s3:ListObjectsV2": {"s3:ListBucket"},
    "s3:HeadObject": {"s3:GetObject"},
    "s3:DeleteObjects": {"s3:DeleteObject"},
    # The SDK crate is aws-sdk-eventbridge; IAM's service prefix is `events`.
    "eventbridge:PutEvents": {"events:PutEvents"},
    # A transaction is authorized as the item actions of its items: the builders the file uses decide.
    "dynamodb:TransactWriteItems": {"<transact-items>"},
}
TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}

# Calls the code can make that the task role deliberately does not get, with the reason.
NOT_GRANTED: dict[str, str] = {
    "dynamodb:CreateTable": "the stack creates the lease table before the task definition that names it; "
                            "the code calls CreateTable only when DescribeTable finds no table",
}

# Grants beyond what the code calls, with the reason. Empty.
GRANTED_EXTRA: dict[str, str] = {}

# Values for parameters without a default (only their shape matters to the checks).
PLACEHOLDERS = {
    "AWS::EC2::VPC::Id": "vpc-0123456789abcdef0",
    "List<AWS::EC2::Subnet::Id>": ["subnet-0aaa", "subnet-0bbb"],
    "String": "placeholder",
    "Number": "1",
}

# What the alarms see in a few situations: metric name -> value (None: no data point). Reads are
# GetRecords.Success (polling) or SubscribeToShardEvent.Success (enhanced fan-out); `fires` names the alarms
# that must be in ALARM, every other alarm must not be.
_READS = ("GetRecords.Success", "SubscribeToShardEvent.Success")
ALARM_SCENARIOS: dict[str, dict] = {
    "a new stack before any data": {"metrics": {}, "fires": set()},
    "the service scaled to 0 (replay)": {
        "metrics": {"DesiredTaskCount": 0, "RunningTaskCount": 0}, "fires": set()},
    "the service scaled to 0, no task metric": {"metrics": {"DesiredTaskCount": 0}, "fires": set()},
    "healthy": {
        "metrics": {"DesiredTaskCount": 1, "RunningTaskCount": 1, **{r: 100 for r in _READS},
                    "GetRecords.IteratorAgeMilliseconds": 0, "SubscribeToShardEvent.MillisBehindLatest": 0},
        "fires": set()},
    "a task wanted, none running": {
        "metrics": {"DesiredTaskCount": 1, "RunningTaskCount": 0}, "fires": {"ConsumerDownAlarm"}},
    "a task wanted, no running-task data": {
        "metrics": {"DesiredTaskCount": 1}, "fires": {"ConsumerDownAlarm"}},
    "a task runs but reads nothing": {
        "metrics": {"DesiredTaskCount": 1, "RunningTaskCount": 1}, "fires": {"NoReaderAlarm"}},
    "lagging": {
        "metrics": {"DesiredTaskCount": 1, "RunningTaskCount": 1, **{r: 100 for r in _READS},
                    "GetRecords.IteratorAgeMilliseconds": 10**9,
                    "SubscribeToShardEvent.MillisBehindLatest": 10**9},
        "fires": {"IteratorAgeAlarm"}},
}



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
        # A template too large to pass inline: the documented deploy command must upload it (--s3-bucket).
        guide = report.root / "docs" / "deploy.md"
        if t.stat().st_size > INLINE_TEMPLATE_BYTES and guide.exists():
            commands = re.findall(r"aws cloudformation deploy [^`]*?--template-file[^`]*?(?=\n\S|\n```)",
                                  guide.read_text())
            if not commands or any("--s3-bucket" not in c for c in commands):
                report.fail("lint", t, f"{t.stat().st_size} bytes, over the {INLINE_TEMPLATE_BYTES} CloudFormation "
                            "accepts inline: docs/deploy.md's `aws cloudformation deploy --template-file` needs "
                            "--s3-bucket")
                continue
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


# ---------------------------------------------------------------------------------------------- modes
def parameter_values(template: dict, overrides: dict[str, str]) -> dict:
    values = {}
    for name, p in template.get("Parameters", {}).items():
        if name in overrides:
            values[name] = overrides[name]
        elif "Default" in p:
            values[name] = str(p["Default"]) if not isinstance(p["Default"], list) else p["Default"]
        else:
            values[name] = PLACEHOLDERS.get(p.get("Type", "String"), "placeholder")
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"mode sets unknown parameters {sorted(unknown)}")
    return values


def holds(node, params: dict, condition=None) -> bool:
    """A condition or rule assertion (Fn::Equals/Not/And/Or/Contains, Condition) for `params`, the way
    CloudFormation compares: parameter values as strings."""
    def value(v):
        if isinstance(v, dict) and list(v) == ["Ref"]:
            v = params[v["Ref"]]
        if isinstance(v, dict) and list(v) == ["Fn::Join"]:
            sep, parts = v["Fn::Join"]
            parts = value(parts)
            return sep.join(p for x in ([parts] if isinstance(parts, str) else parts)
                            for p in ([x] if isinstance(x, str) else x))
        if isinstance(v, list):
            return [value(x) for x in v]
        return str(v) if isinstance(v, (int, float)) else v

    (fn, args), = node.items()
    if fn == "Fn::Equals":
        return value(args[0]) == value(args[1])
    if fn == "Fn::Not":
        return not holds(args[0], params, condition)
    if fn == "Fn::And":
        return all(holds(a, params, condition) for a in args)
    if fn == "Fn::Or":
        return any(holds(a, params, condition) for a in args)
    if fn == "Fn::Contains":
        return value(args[1]) in value(args[0])
    if fn == "Condition" and condition is not None:
        return condition(args)
    raise ValueError(f"unsupported function {fn}")


def evaluate_conditions(template: dict, params: dict) -> dict[str, bool]:
    conds = template.get("Conditions", {})
    done: dict[str, bool] = {}

    def cond(name: str) -> bool:
        if name not in done:
            done[name] = holds(conds[name], params, cond)
        return done[name]

    for name in conds:
        cond(name)
    return done


NO_VALUE = object()


def resolve(node, conds: dict[str, bool]):
    """`node` with every Fn::If decided and AWS::NoValue dropped (in lists and mappings)."""
    if isinstance(node, dict):
        if list(node) == ["Fn::If"]:
            name, a, b = node["Fn::If"]
            return resolve(a if conds[name] else b, conds)
        if node == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        out = {}
        for k, v in node.items():
            r = resolve(v, conds)
            if r is not NO_VALUE:
                out[k] = r
        return out
    if isinstance(node, list):
        return [r for r in (resolve(v, conds) for v in node) if r is not NO_VALUE]
    return node


def resolved_resources(template: dict, overrides: dict[str, str], seen: dict | None = None) -> dict:
    conds = evaluate_conditions(template, parameter_values(template, overrides))
    if seen is not None:
        for name, value in conds.items():
            seen.setdefault(name, set()).add(value)
    return {n: resolve(r, conds) for n, r in template.get("Resources", {}).items()
            if conds.get(r.get("Condition"), True)}


def resource_name(ref) -> str | None:
    """The logical id behind a Ref, a GetAtt or a `${X.Arn}` Sub."""
    if isinstance(ref, dict) and "Ref" in ref:
        return ref["Ref"]
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        att = ref["Fn::GetAtt"]
        return att[0] if isinstance(att, list) else att.split(".")[0]
    return None


def role_statements(resources: dict, role: str) -> list[dict]:
    """The Allow statements of `role`: its inline policies and every AWS::IAM::Policy attached to it."""
    docs = [p.get("PolicyDocument", {}) for p in resources[role].get("Properties", {}).get("Policies", [])]
    for r in resources.values():
        if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = r.get("Properties", {}).get("Roles", [])
            if any(resource_name(x) == role or x == role for x in roles):
                docs.append(r["Properties"].get("PolicyDocument", {}))
    return [st for d in docs for st in as_list(d.get("Statement", [])) if st.get("Effect") == "Allow"]


def grants(statements: list[dict]) -> dict[str, list]:
    """Action -> the resources it is allowed on."""
    out: dict[str, list] = {}
    for st in statements:
        for a in as_list(st.get("Action", [])):
            out.setdefault(a, []).extend(as_list(st.get("Resource", [])))
    return out


def containers_running(resources: dict, sub: str):
    """(task definition props, container) of every container whose command is `flowspike <sub>`."""
    for _, r in resources.items():
        if r.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for c in r.get("Properties", {}).get("ContainerDefinitions", []):
            command = [x for x in map(text_of, c.get("Command", [])) if x not in FLOWSPIKE_BINARY_NAMES]
            if command[:1] == [sub]:
                yield r["Properties"], c


def check_archive_grants(report: Report, t: Path, mode: str, sub: str, granted: dict) -> None:
    """The archive bucket (ArchiveBucketName) is read-only, below ArchivePrefix, and only for replay."""
    on_archive = {a: [x for x in (text_of(r) or "" for r in rs) if "${ArchiveBucketName}" in x]
                  for a, rs in granted.items()}
    on_archive = {a: xs for a, xs in on_archive.items() if xs}
    if sub != "replay" and on_archive:
        report.fail("modes", t, f"{mode}: `flowspike {sub}` may {', '.join(sorted(on_archive))} on the archive "
                    "bucket (only the replay task reads it)")
        return
    if sub != "replay":
        return
    for a in sorted(set(on_archive) - ARCHIVE_ACTIONS):
        report.fail("modes", t, f"{mode}: the replay task may {a} on the archive (read-only: "
                    f"{', '.join(sorted(ARCHIVE_ACTIONS))})")
    objects = on_archive.get("s3:GetObject", [])
    if not objects:
        report.fail("modes", t, f"{mode}: the replay task may not read the archive (s3:GetObject)")
    for x in objects:
        if not x.endswith("/${ArchivePrefix}*"):
            report.fail("modes", t, f"{mode}: the replay task reads {x!r}, not only below ArchivePrefix")


def metric_names(node):
    """Every MetricName in alarms and scaling policies (including metric-math parts)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "MetricName" and isinstance(v, str):
                yield v
            else:
                yield from metric_names(v)
    elif isinstance(node, list):
        for v in node:
            yield from metric_names(v)


class _Missing(Exception):
    pass


def _math(expression: str, values: dict):
    """A CloudWatch metric-math expression of one period (IF, FILL, AND/OR, arithmetic, comparisons) on
    `values` (id -> number or None). Raises _Missing when the result has no data point."""
    def need(x):
        if x is None:
            raise _Missing()
        return x
    env = {
        "FILL": lambda x, d: d if x is None else x,
        "IF": lambda c, a, b: a if need(c) else b,
        **values,
    }
    py = re.sub(r"\bAND\b", " and ", re.sub(r"\bOR\b", " or ", expression))
    if not re.fullmatch(r"[A-Za-z0-9_ ().,<>=!+\-*/]*", py):
        raise ValueError(f"unsupported metric math {expression!r}")
    try:
        out = eval(py, {"__builtins__": {}}, env)  # noqa: S307 (the template's own expression, checked above)
    except TypeError:
        raise _Missing() from None  # arithmetic or a comparison on a missing value
    return need(out if not isinstance(out, bool) else int(out))


def alarm_state(props: dict, metrics: dict, params: dict) -> str:
    """ALARM or OK for an alarm of one period value per metric (every evaluation period alike)."""
    try:
        if "Metrics" in props:
            values, result = {}, None
            for q in props["Metrics"]:
                if "MetricStat" in q:
                    values[q["Id"]] = metrics.get(q["MetricStat"]["Metric"]["MetricName"])
            for q in props["Metrics"]:
                if q.get("ReturnData", True):
                    result = (_math(q["Expression"], values) if "Expression" in q
                              else values[q["Id"]])
            if result is None:
                raise _Missing()
        else:
            result = metrics.get(props["MetricName"])
            if result is None:
                raise _Missing()
    except _Missing:
        return "ALARM" if props.get("TreatMissingData", "missing") == "breaching" else "OK"
    threshold = props["Threshold"]
    if isinstance(threshold, dict) and list(threshold) == ["Ref"]:
        threshold = params[threshold["Ref"]]
    threshold = float(threshold)
    op = props["ComparisonOperator"]
    breach = {"GreaterThanThreshold": result > threshold,
              "GreaterThanOrEqualToThreshold": result >= threshold,
              "LessThanThreshold": result < threshold,
              "LessThanOrEqualToThreshold": result <= threshold}[op]
    return "ALARM" if breach else "OK"


def rules_accept(template: dict, params: dict) -> bool:
    """Whether every assertion of the template's Rules holds for `params` (what CloudFormation checks)."""
    for rule in template.get("Rules", {}).values():
        if "RuleCondition" in rule and not holds(rule["RuleCondition"], params):
            continue
        if not all(holds(a["Assert"], params) for a in rule.get("Assertions", [])):
            return False
    return True


def check_alarms_and_scaling(report: Report, t: Path, template: dict, mode: str, overrides: dict,
                             resources: dict) -> None:
    params = parameter_values(template, overrides)
    alarms = {n: r.get("Properties", {}) for n, r in resources.items()
              if r.get("Type") == "AWS::CloudWatch::Alarm"}
    for scenario, spec in ALARM_SCENARIOS.items():
        for name, props in alarms.items():
            try:
                state = alarm_state(props, spec["metrics"], params)
            except (KeyError, ValueError) as e:
                report.fail("modes", t, f"{mode}: {name}: cannot evaluate: {e}")
                break
            want = "ALARM" if name in spec["fires"] else "OK"
            if state != want:
                report.fail("modes", t, f"{mode}: {name} is {state} with {scenario} (should be {want})")
    for scenario, spec in ALARM_SCENARIOS.items():
        for name in spec["fires"] - set(alarms):
            report.fail("modes", t, f"{mode}: no {name} (it should fire with {scenario})")
    if overrides.get("EnableAutoScaling") != "true":
        return
    scaled = {m for r in resources.values() if r.get("Type") == "AWS::ApplicationAutoScaling::ScalableTarget"
              for m in re.findall(r"\$\{(\w+)\.Name\}", text_of(r.get("Properties", {}).get("ResourceId")) or "")}
    if not scaled:
        report.fail("modes", t, f"{mode}: no scalable target names an ECS service")
    for name, r in resources.items():
        if name in scaled and "DesiredCount" in r.get("Properties", {}):
            report.fail("modes", t, f"{mode}: {name} sets DesiredCount under autoscaling (a stack update "
                        "resets the count the policy chose)")
        if r.get("Type") == "AWS::ApplicationAutoScaling::ScalableTarget":
            if r.get("Properties", {}).get("MaxCapacity") != {"Ref": "AutoScalingMaxTasks"}:
                report.fail("modes", t, f"{mode}: {name} MaxCapacity is not AutoScalingMaxTasks (the "
                            "parameter the rules bound by the shard count)")
    wrong = []
    for stream_mode, shard_counts in (("PROVISIONED", range(1, 18)), ("ON_DEMAND", [4])):
        for shards in shard_counts:
            for most in range(1, 17):
                p = {**params, "SourceStreamMode": stream_mode, "SourceShardCount": str(shards),
                     "AutoScalingMaxTasks": str(most)}
                if rules_accept(template, p) != (most <= shards):
                    wrong.append(f"{stream_mode} shards={shards} max={most}")
    if wrong:
        report.fail("modes", t, f"{mode}: the Rules do not bound AutoScalingMaxTasks by the shard count: "
                    + ", ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))


def sdk_operations(root: Path) -> dict[str, set[str]]:
    """aws_sdk crate (e.g. `aws_sdk_kinesis`) -> its operations in snake_case, from the crate's
    src/operation/ directory in the cargo registry, at the version of Cargo.lock."""
    lock = tomllib.loads((root / "Cargo.lock").read_text())
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    out = {}
    for pkg in lock.get("package", []):
        name = pkg["name"]
        if not name.startswith("aws-sdk-"):
            continue
        dirs = sorted(cargo_home.glob(f"registry/src/*/{name}-{pkg['version']}/src/operation"))
        if not dirs:
            raise ValueError(f"{name} {pkg['version']} is not in {cargo_home}/registry/src (run cargo build first)")
        out[name.replace("-", "_")] = {p.name for p in dirs[0].iterdir() if p.is_dir()}
    return out


def pascal(snake: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in snake.split("_"))


def source_calls(root: Path, sources: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(IAM action, file, feature) of every AWS call of the source, and the calls no location places."""
    ops = sdk_operations(root)
    calls, unplaced = [], []
    for path in sorted(sources.rglob("*.rs")):
        rel = path.relative_to(sources).as_posix()
        if "/tests/" in f"/{rel}" or "/benches/" in f"/{rel}" or "target/" in rel:
            continue
        text = path.read_text()
        cut = re.search(r"(?m)^#\[cfg\(test\)\]\s*\n\s*mod ", text)  # unit tests: not deployed code
        if cut:
            text = text[:cut.start()]
        crates = [c for c in ops if re.search(rf"\b{c}\b", text)]
        if not crates:
            continue
        fns = [(m.start(), m.group(1)) for m in re.finditer(r"\bfn\s+([a-z_][a-z0-9_]*)", text)]
        for m in re.finditer(r"\.([a-z][a-z0-9_]*)\(\)", text):
            op = m.group(1)
            crate = next((c for c in crates if op in ops[c]), None)
            if crate is None:
                continue
            service = crate.removeprefix("aws_sdk_")
            action = f"{service}:{pascal(op)}"
            enclosing = next((n for at, n in reversed(fns) if at < m.start()), "")
            line = text.count("\n", 0, m.start()) + 1
            where = f"{rel}:{line} ({enclosing or 'top level'})"
            feature = next((f for glob, fn, f in CALL_LOCATIONS
                            if fnmatch.fnmatchcase(rel, glob)
                            and (fn is None or re.fullmatch(fn, enclosing))), None)
            if feature is None:
                unplaced.append(f"{action} at {where}")
                continue
            for a in sorted(ACTION_ALIASES.get(action, {action})):
                if a == "<transact-items>":
                    for item, item_action in TRANSACT_ITEM_ACTIONS.items():
                        if re.search(rf"\b{item}::builder\(", text):
                            calls.append((item_action, where, feature))
                else:
                    calls.append((a, where, feature))
    return calls, unplaced


def check_mode_iam(report: Report, t: Path, mode: str, granted: dict, calls) -> list[str]:
    features = MODE_FEATURES[mode]
    needed: dict[str, str] = {}
    for action, where, feature in calls:
        if feature in features:
            needed.setdefault(action, where)
    for action in sorted(needed):
        if action not in granted and action not in NOT_GRANTED:
            report.fail("modes", t, f"{mode}: the task role lacks {action}, which the code calls "
                        f"({needed[action]})")
    for action in sorted(set(granted) - set(needed) - set(GRANTED_EXTRA)):
        report.fail("modes", t, f"{mode}: the task role grants {action}, which no code of this mode calls "
                    "(remove it, or list it in GRANTED_EXTRA with the reason)")
    return sorted(needed)


def check_firehose(report: Report, t: Path, mode: str, resources: dict, props: dict, c: dict) -> None:
    """serve-firehose: the access key only as a Secrets Manager secret (the execution role may read that
    secret, the delivery stream resolves the same one), HTTPS-only listeners, a delivery stream to an https
    URL with failed records backed up to S3, and a VPC flow log delivering to that stream."""
    def fail(why: str) -> None:
        report.fail("modes", t, f"{mode}: {why}")

    env = {e["Name"] for e in c.get("Environment", []) if isinstance(e, dict)}
    command = [text_of(x) or "" for x in c.get("Command", [])]
    if "FLOWSPIKE_FIREHOSE_ACCESS_KEYS" in env or "FLOWSPIKE_FIREHOSE_ACCESS_KEY_FILE" in env:
        fail("the access key is a plain environment value (use the container's Secrets)")
    if any(x.split("=")[0] == "--access-key" for x in command):
        fail("the access key is on the command line (`ps` and the task definition show it)")
    secrets = {x.get("Name"): resource_name(x.get("ValueFrom")) for x in c.get("Secrets", [])}
    secret = secrets.get("FLOWSPIKE_FIREHOSE_ACCESS_KEYS")
    if secret not in resources or resources[secret].get("Type") != "AWS::SecretsManager::Secret":
        fail("FLOWSPIKE_FIREHOSE_ACCESS_KEYS is not a secret from a Secrets Manager secret of the stack")
        return
    execution = resource_name(props.get("ExecutionRoleArn"))
    readers = grants(role_statements(resources, execution)).get("secretsmanager:GetSecretValue", []) \
        if execution in resources else []
    if not readers or any(resource_name(r) != secret for r in readers):
        fail(f"the execution role may not read {secret} only (secretsmanager:GetSecretValue)")
    listeners = [r.get("Properties", {}) for r in resources.values()
                 if r.get("Type") == "AWS::ElasticLoadBalancingV2::Listener"]
    if not listeners:
        fail("no load balancer listener in front of serve-firehose")
    for lp in listeners:
        if lp.get("Protocol") != "HTTPS" or not lp.get("Certificates"):
            fail(f"a listener on port {lp.get('Port')} is {lp.get('Protocol')} (HTTPS with a certificate only)")
    if not any(r.get("Type") == "AWS::ECS::Service" and r.get("Properties", {}).get("LoadBalancers")
               for r in resources.values()):
        fail("no ECS service registers serve-firehose with the load balancer")
    streams = {n: r.get("Properties", {}).get("HttpEndpointDestinationConfiguration") for n, r in resources.items()
               if r.get("Type") == "AWS::KinesisFirehose::DeliveryStream"}
    streams = {n: d for n, d in streams.items() if d}
    if not streams:
        fail("no Firehose delivery stream with an HTTP endpoint destination")
    for name, d in streams.items():
        endpoint = d.get("EndpointConfiguration", {})
        if not (text_of(endpoint.get("Url")) or "").startswith("https://"):
            fail(f"{name} delivers to {text_of(endpoint.get('Url'))!r}, not https://")
        if f"{{{{resolve:secretsmanager:${{{secret}}}" not in (text_of(endpoint.get("AccessKey")) or ""):
            fail(f"{name}'s access key is not resolved from {secret}")
        if d.get("S3BackupMode") not in ("FailedDataOnly", "AllData") or not d.get("S3Configuration"):
            fail(f"{name} backs no failed records up to S3")
    flow_logs = [r.get("Properties", {}) for r in resources.values() if r.get("Type") == "AWS::EC2::FlowLog"
                 and r.get("Properties", {}).get("LogDestinationType") == "kinesis-data-firehose"]
    if not any(resource_name(f.get("LogDestination")) in streams for f in flow_logs):
        fail("no VPC flow log delivers to the delivery stream (LogDestinationType kinesis-data-firehose)")


def check_modes(report: Report, templates: list[Path], root: Path, sources: Path) -> None:
    try:
        calls, unplaced = source_calls(root, sources)
    except ValueError as e:
        report.fail("modes", sources, str(e))
        return
    for u in unplaced:
        report.fail("modes", sources, f"AWS call {u} is in no CALL_LOCATIONS entry (in which modes does it run?)")
    if not calls:
        report.fail("modes", sources, "no AWS SDK call found in the source")
    for t in templates:
        template = load_template(t)
        params = template.get("Parameters", {})
        bad_before = report.failures
        checked, summaries = [], []
        seen: dict[str, set[bool]] = {}
        for mode, overrides in MODES.items():
            missing = [k for k in overrides if k not in params]
            if missing:
                report.fail("modes", t, f"{mode}: no parameter {', '.join(missing)} (the mode cannot be deployed)")
                continue
            checked.append(mode)
            try:
                resources = resolved_resources(template, overrides, seen)
                if not rules_accept(template, parameter_values(template, overrides)):
                    report.fail("modes", t, f"{mode}: the template's Rules reject the mode's parameters")
            except (ValueError, KeyError) as e:
                report.fail("modes", t, f"{mode}: cannot resolve the template: {e}")
                continue
            efo = overrides.get("EnhancedFanOut") == "true"
            check_alarms_and_scaling(report, t, template, mode, overrides, resources)
            sub = MODE_COMMAND.get(mode, "consume")
            for other in ("consume", "replay", "serve-firehose"):
                if other == sub:
                    continue
                for props, _ in containers_running(resources, other):
                    role = resource_name(props.get("TaskRoleArn"))
                    if role in resources:
                        check_archive_grants(report, t, mode, other, grants(role_statements(resources, role)))
            containers = list(containers_running(resources, sub))
            if not containers:
                report.fail("modes", t, f"{mode}: no task definition runs `flowspike {sub}`")
            for props, c in containers:
                env = {e["Name"]: e.get("Value") for e in c.get("Environment", []) if isinstance(e, dict)}
                if efo and env.get("FLOWSPIKE_EFO") != "true":
                    report.fail("modes", t, f"{mode}: the consumer does not get FLOWSPIKE_EFO=true")
                if not efo and env.get("FLOWSPIKE_EFO", "false") != "false":
                    report.fail("modes", t, f"{mode}: the consumer gets FLOWSPIKE_EFO without EnhancedFanOut")
                role = resource_name(props.get("TaskRoleArn"))
                if role not in resources:
                    report.fail("modes", t, f"{mode}: the consumer's task role is not in the template")
                    continue
                granted = grants(role_statements(resources, role))
                check_archive_grants(report, t, mode, sub, granted)
                if sub == "serve-firehose":
                    check_firehose(report, t, mode, resources, props, c)
                derived = check_mode_iam(report, t, mode, granted, calls)
                summaries.append(f"{mode}: {len(derived)} actions")
                # The calls of enhanced fan-out that IAM authorizes on the consumer, whose ARN is
                # <stream ARN>/consumer/<name>:<timestamp>.
                efo_granted = {a for a, _, f in calls if f == "efo"} & set(granted) & CONSUMER_ACTIONS
                if efo:
                    for a in sorted(efo_granted):
                        texts = [text_of(r) or "" for r in granted[a]]
                        on_consumer = [x for x in texts if "/consumer/" in x]
                        if not on_consumer:
                            report.fail("modes", t, f"{mode}: {a} is not granted on the consumer ARN "
                                        "(<stream ARN>/consumer/<name>:*)")
                        if a == "kinesis:SubscribeToShard" and len(on_consumer) != len(granted[a]):
                            report.fail("modes", t, f"{mode}: {a} is granted beyond the consumer ARN")
            if efo:
                for name, r in resources.items():
                    if r.get("Type") not in ("AWS::CloudWatch::Alarm", "AWS::ApplicationAutoScaling::ScalingPolicy"):
                        continue
                    for m in metric_names(r.get("Properties", {})):
                        if m.startswith("GetRecords."):
                            report.fail("modes", t, f"{mode}: {name} reads {m}, which enhanced fan-out never "
                                        "emits (no GetRecords calls)")
        for name in template.get("Conditions", {}):
            missing = {True, False} - seen.get(name, set())
            if checked and missing:
                report.fail("modes", t, f"condition {name} is never {' or '.join(map(str, missing))} in MODES "
                            "(add a mode that exercises it)")
        if not checked:
            print(f"note modes {report.name(t)}: no deployment mode applies")
        elif report.failures == bad_before:
            report.ok("modes", t, "IAM from the code, " + "; ".join(summaries))


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
                command = [text_of(x) for x in c.get("Command", [])]
                if any(x is None for x in command):
                    report.fail("cli", t, f"{where}: the command must be strings (literal or Fn::Sub)")
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
    ap.add_argument("--only", default="lint,iam,docker,cli,modes")
    ap.add_argument("--template", type=Path, action="append", help="default: infra/cloudformation/*.y*ml")
    ap.add_argument("--dockerfile", type=Path, help="default: infra/Dockerfile")
    ap.add_argument("--sources", type=Path, help="root of the Rust sources to derive IAM from (default: --root)")
    a = ap.parse_args()
    report = Report(a.root)
    templates = a.template or sorted(
        p for p in (a.root / "infra" / "cloudformation").glob("*") if p.suffix in (".yaml", ".yml", ".json")
    )
    if not templates:
        print("FAIL: no templates found under infra/cloudformation", file=sys.stderr)
        return 1
    only = set(a.only.split(","))
    unknown = only - {"lint", "iam", "docker", "cli", "modes"}
    if unknown:
        ap.error(f"unknown checks: {', '.join(sorted(unknown))}")
    if "lint" in only:
        check_lint(report, templates)
    if "iam" in only:
        check_iam(report, templates)
    if "docker" in only:
        check_docker(report, a.dockerfile or a.root / "infra" / "Dockerfile", templates)
    if "modes" in only:
        check_modes(report, templates, a.root, a.sources or a.root)
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
