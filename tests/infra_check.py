#!/usr/bin/env python3
"""Checks the deployment files in infra/ (run by tests/infra.rs; needs cfn-lint from tests/requirements.txt).

    python tests/infra_check.py --root . --flowspike target/debug/flowspike [--only lint,iam,docker,cli,modes]
                                [--template FILE ...] [--dockerfile FILE]
    python tests/infra_check.py --root . --only image [--build-dir target] [--profile dev]
                                [--dockerignore FILE] [--context-file REL=PATH ...] [--keep]

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
        ENTRYPOINT is flowspike; the dependency layer copies the Cargo.toml of every workspace member; the first
        (builder) and the final stage's bases are one Debian release (`-trixie` tag, `debian:13.x`): the binary
        needs the glibc it was linked against; docs/deploy.md, "1. Image", names every file the final stage
        COPYs and every package it apt-get installs.
image   (not in the default --only: it builds) infra/Dockerfile's builder stage without Docker: the build context
        as `docker build` sends it (the files <Dockerfile>.dockerignore, else .dockerignore, lets through; no `!`
        exceptions), the stage's WORKDIR/ARG/ENV/COPY carried out under a temporary directory (a COPY of what the
        context lacks fails), its `bash infra/image/build.sh ...` RUNs run there (other RUNs, apt-get, are not:
        the machine's tools stand in) with --profile (default dev) and offline; with --build-dir, Cargo's
        build directory is shared (dependencies reused) and the workspace's own crates get a per-package
        profile override (codegen-units) so their artifacts never replace that build's. Then the final stage:
        each file it COPYs --from the stage exists; the ENTRYPOINT binary's NEEDED libraries are in RUNTIME_LIBS
        and its GLIBC_ versions <= RUNTIME_GLIBC (readelf); `--version` runs as the stage's USER (setpriv, when
        root). infra/image/stubs.txt names only sources of real targets.
cli     every ECS task definition runs a real `flowspike` subcommand: each `--flag` of its command and each
        FLOWSPIKE_* variable of its environment is one that `flowspike <subcommand> --help` lists (`[env: ...]`);
        every required option is given (flag or variable); the state is on S3; the health check calls
        /healthz on the port of FLOWSPIKE_METRICS_ADDR.
modes   the template resolved for each deployment mode (MODES: parameter values; conditions evaluated, Fn::If
        branches chosen, resources of false conditions dropped; the Rules accept each mode, and every
        condition is true in one mode and false in another): enhanced fan-out sets FLOWSPIKE_EFO=true on
        the consumer, its task role grants CONSUMER_ACTIONS the code calls on the consumer ARN
        `<stream>/consumer/<name>:*` (SubscribeToShard only there) and no alarm or scaling policy reads a
        GetRecords metric (missing under enhanced fan-out). Every task of the mode (consumer, Firehose
        endpoint, replay) gets ThreatListS3Uris as FLOWSPIKE_THREAT_LISTS and its role may s3:GetObject
        exactly those objects and nothing else on them (neither when it is empty; its pattern refuses
        wildcard keys; no other literal or templated GetObject resource beside the state and the archive):
        check_threat_lists. A role's ManagedPolicyArns must name managed policies of the template that the
        mode creates (an AWS managed policy's grants could not be checked).
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
    # Threat lists in S3 (ThreatListS3Uris): every task reads exactly those objects, in other buckets.
    "replay+threat-lists": {"ArchiveBucketName": "flow-log-archive", "ArchivePrefix": "AWSLogs/",
                            "ThreatListS3Uris": "s3://intel-feeds/lists/tor-exits.txt,s3://sec-tools.example/custom"},
    # The two services with threat lists: the consumer (polling, no leases) and the Firehose endpoint.
    "firehose+threat-lists": {"FirehoseEndpoint": "true", "FirehoseDomainName": "flowspike.example.com",
                              "FirehoseCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d",
                              "FlowLogVpcId": "vpc-0123456789abcdef0",
                              "ThreatListS3Uris": "s3://intel-feeds/lists/tor-exits.txt,s3://sec-tools.example/custom"},
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
                    "SecurityHubFindings": "true", "EventBusName": "security-findings", "OutputFormat": "asff",
                    "ThreatListS3Uris": "s3://intel-feeds/tor-exits.txt"},
}
# The `flowspike` subcommand whose task definition and role a mode is about (default: consume).
MODE_COMMAND = {"replay": "replay", "replay+threat-lists": "replay", "firehose": "serve-firehose",
                "firehose+sinks": "serve-firehose", "firehose+threat-lists": "serve-firehose"}
# What the failures call the task running each subcommand.
TASK_NAMES = {"consume": "consumer task", "replay": "replay task", "serve-firehose": "serve-firehose task"}
# Kinesis actions authorized on the stream consumer resource type (Service Authorization Reference).
CONSUMER_ACTIONS = {"kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"}
# What the replay task may do on the archive bucket.
ARCHIVE_ACTIONS = {"s3:ListBucket", "s3:GetObject"}
# The templated object ARNs a task may s3:GetObject beside the threat lists: the state, the archive.
STATE_AND_ARCHIVE_OBJECTS = ("${StateBucket.Arn}/", "arn:${AWS::Partition}:s3:::${ArchiveBucketName}/")

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
    # --threat-list s3://...: the lists are read with the same S3 client (GetObject).
    "replay+threat-lists": {"replay", "s3state"},
    # `serve-firehose`: pushed requests, the same state and spike stream as the consumer.
    "firehose": {"firehose", "s3state", "spikes"},
    # --threat-list s3://...: GetObject with the state's S3 client, as replay.
    "firehose+threat-lists": {"firehose", "s3state", "spikes"},
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
    """The Allow statements of `role`: its inline policies, the managed policies of the template its
    ManagedPolicyArns names, and every AWS::IAM::Policy or ManagedPolicy that names it in Roles."""
    props = resources[role].get("Properties", {})
    docs = [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
    attached = {resource_name(x) for x in as_list(props.get("ManagedPolicyArns", []))}
    for name, r in resources.items():
        if r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = r.get("Properties", {}).get("Roles", [])
            if name in attached or any(resource_name(x) == role or x == role for x in roles):
                docs.append(r["Properties"].get("PolicyDocument", {}))
    return [st for d in docs for st in as_list(d.get("Statement", [])) if st.get("Effect") == "Allow"]


def unchecked_policies(resources: dict, role: str) -> list[str]:
    """The entries of `role`'s ManagedPolicyArns that are no managed policy of the template in this mode:
    AWS managed policies (whose grants are not in the template) or a Ref to a resource the mode leaves out."""
    out = []
    for x in as_list(resources[role].get("Properties", {}).get("ManagedPolicyArns", [])):
        name = resource_name(x)
        if name is None or resources.get(name, {}).get("Type") != "AWS::IAM::ManagedPolicy":
            out.append(name or text_of(x) or repr(x))
    return out


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


def evaluate(node, params: dict):
    """The value of `node` for `params` as far as it is plain text: a string or a list of strings from
    literals, Ref of a parameter, Fn::Split, Fn::Join and Fn::Select; Fn::Sub's template as it stands
    (`${...}` left in); None for anything else (GetAtt, pseudo parameters)."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        items = [evaluate(v, params) for v in node]
        return None if any(x is None for x in items) else items
    if not (isinstance(node, dict) and len(node) == 1):
        return None
    (fn, args), = node.items()
    if fn == "Ref":
        return params.get(args)
    if fn == "Fn::Sub":
        return text_of(node)
    if fn == "Fn::Split":
        whole = evaluate(args[1], params)
        return whole.split(args[0]) if isinstance(whole, str) else None
    if fn == "Fn::Join":
        parts = evaluate(args[1], params)
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            return None
        return args[0].join(parts)
    if fn == "Fn::Select":
        items = evaluate(args[1], params)
        return items[int(args[0])] if isinstance(items, list) and int(args[0]) < len(items) else None
    return None


def check_threat_lists(report: Report, t: Path, mode: str, template: dict, params: dict,
                       resources: dict) -> None:
    """ThreatListS3Uris reaches every task of the mode (consumer, Firehose endpoint, replay) as
    FLOWSPIKE_THREAT_LISTS (unset when empty), and each task's role may s3:GetObject exactly those objects
    (`arn:*:s3:::bucket/key`, no wildcard in a key), nothing else on them, and no other object outside the
    state and the archive; the parameter's pattern refuses keys that would widen the grant."""
    p = template.get("Parameters", {}).get("ThreatListS3Uris")
    if p is None:
        report.fail("modes", t, f"{mode}: no parameter ThreatListS3Uris (threat lists in S3)")
        return
    value = params.get("ThreatListS3Uris", "")
    pattern = p.get("AllowedPattern", "")
    if not re.fullmatch(pattern, value):
        report.fail("modes", t, f"{mode}: ThreatListS3Uris {value!r} does not match its AllowedPattern")
    for wide in ("s3://intel-feeds/lists/*", "s3://intel-feeds/a?b", "s3://intel-feeds/${aws:username}",
                 "s3://intel-feeds/", "s3://intel-feeds/a b", "https://intel-feeds/x", "s3://intel-feeds/a,"):
        if re.fullmatch(pattern, wide):
            report.fail("modes", t, f"ThreatListS3Uris accepts {wide!r} (a key must name one object)")
    uris = [u for u in value.split(",") if u]
    want = sorted("arn:*:s3:::" + u[len("s3://"):] for u in uris)
    for sub, task in TASK_NAMES.items():
        for props, c in containers_running(resources, sub):
            env = {e["Name"]: e.get("Value") for e in c.get("Environment", []) if isinstance(e, dict)}
            got = evaluate(env["FLOWSPIKE_THREAT_LISTS"], params) if "FLOWSPIKE_THREAT_LISTS" in env else None
            if uris and got != value:
                report.fail("modes", t, f"{mode}: the {task} gets FLOWSPIKE_THREAT_LISTS={got!r}, not {value!r}")
            if not uris and "FLOWSPIKE_THREAT_LISTS" in env:
                report.fail("modes", t, f"{mode}: the {task} gets FLOWSPIKE_THREAT_LISTS without threat lists")
            role = resource_name(props.get("TaskRoleArn"))
            if role not in resources:
                report.fail("modes", t, f"{mode}: the {task}'s role {role} is not in the template")
                continue
            for name in unchecked_policies(resources, role):
                report.fail("modes", t, f"{mode}: {role} attaches {name}, no managed policy of the template in "
                            "this mode (its grants cannot be checked)")
            granted = grants(role_statements(resources, role))
            # The object grants that name no state or archive template (`${...}`) are the threat lists'.
            objects = []
            for r in granted.get("s3:GetObject", []):
                v = evaluate(r, params)
                objects += v if isinstance(v, list) else [v if v is not None else text_of(r) or repr(r)]
            literal = sorted(x for x in objects if "${" not in x)
            if literal != want:
                report.fail("modes", t, f"{mode}: the {task} may s3:GetObject {literal}, the threat lists are {want}")
            for x in literal:
                if re.search(r"[*?]", x[len("arn:*:s3:::"):]):
                    report.fail("modes", t, f"{mode}: the threat-list grant {x!r} has a wildcard")
            for x in objects:
                if "${" in x and not x.startswith(STATE_AND_ARCHIVE_OBJECTS):
                    report.fail("modes", t, f"{mode}: the {task} may s3:GetObject {x!r}, which is neither the "
                                "state, the archive nor a threat list")
            for action, rs in sorted(granted.items()):
                named = set()
                for r in rs:
                    v = evaluate(r, params)
                    named.update(v if isinstance(v, list) else [v])
                if action != "s3:GetObject" and named & set(want):
                    report.fail("modes", t, f"{mode}: the {task} may {action} on the threat lists (read-only: "
                                "s3:GetObject)")


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
            check_threat_lists(report, t, mode, template, parameter_values(template, overrides), resources)
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
    # The binary links against the builder's glibc: the runtime must have the same Debian release.
    if len(stages) >= 2:
        releases = [(s["image"], debian_release(s["image"])) for s in (stages[0], stages[-1])]
        if any(r is None for _, r in releases):
            report.fail("docker", dockerfile, "cannot tell the Debian release of "
                        + ", ".join(i for i, r in releases if r is None) + " from its tag")
        elif releases[0][1] != releases[1][1]:
            report.fail("docker", dockerfile, f"the builder ({releases[0][0]}) and the runtime "
                        f"({releases[1][0]}) are different Debian releases")
    # docs/deploy.md, "Image", lists what the runtime stage adds to its base.
    deploy = report.root / "docs" / "deploy.md"
    if len(stages) >= 2 and deploy.exists():
        text = deploy.read_text()
        start = text.find("### 1. Image")
        section = text[start:text.find("\n### ", start + 1)] if start >= 0 else ""
        adds = [copy_args(a)[2] for w, a in stages[-1]["ins"] if w == "COPY"] + runtime_packages(stages[-1])
        missing = [f for f in adds if f"`{f}`" not in section]
        if missing:
            report.fail("docker", dockerfile, "docs/deploy.md, \"1. Image\", does not list the runtime's "
                        + ", ".join(missing))
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


# ---------------------------------------------------------------------------------------------- image
# The runtime base is Debian 13 (trixie). The binary may need only what its libc6 and libgcc-s1 packages
# ship (sonames of glibc 2.41's libc6 on amd64 and arm64, and libgcc_s), and no glibc symbol version newer
# than trixie's glibc. A conservative list: a library missing here fails the check, never the image.
RUNTIME_LIBS = {
    "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "libresolv.so.2", "libutil.so.1", "libanl.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
    "libgcc_s.so.1",
}
RUNTIME_GLIBC = (2, 41)
# Debian codename of a version, for the builder/runtime release check (a binary linked against a newer
# glibc than the runtime's does not start).
DEBIAN_CODENAMES = {"11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}
# The only RUN commands of the builder stage the image check executes; the others (apt-get) are reported
# as not run. Absolute paths among the arguments are placed under the emulated stage's root.
BUILD_SCRIPT_RUN = re.compile(r"^bash infra/image/build\.sh( [^;&|<>$`]+)?$")


def dockerignore_rules(path: Path | None) -> list[tuple[bool, re.Pattern, str]]:
    """(exclude?, regex, pattern) per line of a .dockerignore, in order (BuildKit's patternmatcher:
    paths relative to the context root, `**` any number of directories, `*`/`?` within one, `!` an
    exception; the last pattern that matches a path or one of its parents decides)."""
    rules = []
    if path is None or not path.exists():
        return rules
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        out, i = "", 0
        while i < len(pat):
            c = pat[i]
            if pat.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
                continue
            if pat.startswith("**", i):
                out, i = out + ".*", i + 2
                continue
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "[":
                j = pat.find("]", i)
                out, i = out + pat[i:j + 1], j
            else:
                out += re.escape(c)
            i += 1
        rules.append((exclude, re.compile("^" + out + "$"), line))
    return rules


def ignored_by(rules, rel: str) -> str | None:
    """The pattern that leaves `rel` out of the context, or None if it is sent."""
    parts = rel.split("/")
    decision = None
    for exclude, rx, line in rules:
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            decision = line if exclude else None
    return decision


def context_files(root: Path, rules) -> dict[str, Path]:
    """What `docker build` sends from `root`: relative path -> file (symlinks kept as links)."""
    files, prune = {}, not any(not exclude for exclude, _, _ in rules)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if prune:  # no exception pattern: an excluded directory sends nothing below it
            dirnames[:] = [d for d in dirnames if not ignored_by(rules, rel_dir + d)]
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            if not ignored_by(rules, rel_dir + name):
                files[rel_dir + name] = Path(dirpath) / name
    return files


def stages_of(dockerfile: Path) -> list[dict]:
    stages: list[dict] = []
    for word, args in dockerfile_instructions(dockerfile):
        if word == "FROM":
            toks = [a for a in args.split() if not a.startswith("--")]
            alias = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
            stages.append({"image": toks[0], "alias": alias, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, args))
    return stages


def copy_args(args: str) -> tuple[dict, list[str], str]:
    """COPY's flags, sources and destination (shell or JSON form)."""
    flags, rest = {}, args.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key], rest = value, rest.strip()
    import json
    words = json.loads(rest) if rest.startswith("[") else rest.split()
    return flags, words[:-1], words[-1]


def runtime_packages(stage: dict) -> list[str]:
    """The packages an `apt-get install` of the stage installs."""
    pkgs = []
    for word, args in stage["ins"]:
        if word != "RUN":
            continue
        for m in re.finditer(r"apt-get install ([^;&|]*)", args):
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def debian_release(image: str) -> str | None:
    """`13` for debian:13.4-slim or rust:1.95.0-slim-trixie; None if the tag does not say."""
    tag = image.split("@")[0].rpartition(":")[2]
    name = image.split("@")[0].rpartition(":")[0].split("/")[-1]
    for version, codename in DEBIAN_CODENAMES.items():
        if re.search(rf"(^|-){codename}($|-)", tag):
            return version
    m = re.match(r"^(\d+)(\.\d+)?(-slim)?$", tag)
    return m.group(1) if name == "debian" and m else None


class StageFs:
    """A stage's filesystem emulated under a directory (`/src` -> `<root>/src`)."""

    def __init__(self, root: Path):
        self.root, self.workdir = root, "/"

    def path(self, p: str) -> Path:
        return self.root / os.path.normpath(os.path.join(self.workdir, p)).lstrip("/")


def check_image(report: Report, dockerfile: Path, root: Path, dockerignore: Path | None,
                build_dir: Path | None, profile: str, replaced: dict[str, Path], keep: bool) -> None:
    """Runs the Dockerfile's builder stage without Docker (see `image` in the module docs)."""
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="flowspike-image-"))
    try:
        _check_image(report, dockerfile, root, dockerignore, build_dir, profile, replaced, work)
    finally:
        if keep:
            print(f"(image: work directory kept at {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _check_image(report, dockerfile, root, dockerignore, build_dir, profile, replaced, work) -> None:
    def fail(why: str) -> None:
        report.fail("image", dockerfile, why)

    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile, else .dockerignore at the root.
    if dockerignore is None:
        own = dockerfile.with_name(dockerfile.name + ".dockerignore")
        dockerignore = own if own.exists() else root / ".dockerignore"
    rules = dockerignore_rules(dockerignore)
    ctx = context_files(root, rules)
    for rel, src in replaced.items():
        ctx[rel] = src
    stages = stages_of(dockerfile)
    final = stages[-1]
    aliases = {s["alias"]: s for s in stages if s["alias"]}

    # Stub list against the workspace's targets: every stubbed path is the source of a real target (a stale
    # line would plant a file Cargo discovers as a target of its own).
    stubs_rel = "infra/image/stubs.txt"
    if stubs_rel in ctx:
        import json
        meta = subprocess.run(["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1",
                               "--manifest-path", str(root / "Cargo.toml")],
                              capture_output=True, text=True)
        if meta.returncode != 0:
            return fail(f"cargo metadata failed: {meta.stderr.strip()}")
        m = json.loads(meta.stdout)
        sources = {os.path.relpath(t["src_path"], m["workspace_root"])
                   for p in m["packages"] for t in p["targets"]}
        for line in ctx[stubs_rel].read_text().splitlines():
            words = line.split("#")[0].split()
            if len(words) == 2 and words[1] not in sources:
                return fail(f"{stubs_rel} stubs {words[1]}, which is the source of no target")

    # The builder stages the final one copies from, in order.
    for name in dict.fromkeys(copy_args(a)[0].get("from") for w, a in final["ins"]
                              if w == "COPY" and "--from=" in a):
        stage = aliases.get(name)
        if stage is None:
            return fail(f"COPY --from={name}: no stage named so")
        fs, env, ran = StageFs(work / f"stage-{name}"), {}, []
        # Shared dependency artifacts (the build directory of the tests' own build: warm), but the
        # emulated workspace's own crates must not overwrite that workspace's: a per-member profile
        # override gives them artifacts of their own (Cargo reads this config from the parent directory;
        # the stage's files stay those of the context).
        if build_dir is not None:
            members = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["members"]
            names = [tomllib.loads((root / mem / "Cargo.toml").read_text())["package"]["name"]
                     for mem in members]
            (work / ".cargo").mkdir(parents=True, exist_ok=True)
            (work / ".cargo" / "config.toml").write_text("".join(
                f'[profile.{profile}.package."{n}"]\ncodegen-units = 255\n' for n in names))
        for word, args in stage["ins"]:
            if word == "WORKDIR":
                fs.workdir = os.path.join(fs.workdir, args)
                fs.path(".").mkdir(parents=True, exist_ok=True)
            elif word in ("ARG", "ENV"):
                key, _, value = args.partition("=")
                env[key.strip()] = value.strip()
            elif word == "COPY":
                flags, srcs, dest = copy_args(args)
                if "from" in flags:
                    return fail(f"COPY --from in the builder stage is not emulated: {args}")
                for src in srcs:
                    s = os.path.normpath(src).lstrip("/")
                    if any(ch in s for ch in "*?["):
                        return fail(f"COPY {src}: wildcards are not emulated")
                    below = {r: p for r, p in ctx.items() if s == "." or r == s or r.startswith(s + "/")}
                    if not below:
                        why = ignored_by(rules, s) if (root / s).exists() else None
                        return fail(f"COPY {src}: not in the build context"
                                    + (f" (left out by {dockerignore.name} pattern {why!r})" if why
                                       else " (no such file)"))
                    for r, p in below.items():
                        if r == s:  # a file: into the directory `dest/`, else as `dest`
                            target = fs.path(dest) / Path(r).name if dest.endswith("/") or len(srcs) > 1 \
                                or dest == "." else fs.path(dest)
                        else:
                            target = fs.path(dest) / (r if s == "." else r[len(s) + 1:])
                        target.parent.mkdir(parents=True, exist_ok=True)
                        if target.exists() or target.is_symlink():
                            target.unlink()
                        shutil.copy2(p, target, follow_symlinks=False)
            elif word == "RUN":
                if not BUILD_SCRIPT_RUN.match(args):
                    continue  # e.g. apt-get: the tools are the test machine's
                argv = [fs.path(a) if a.startswith("/") else a for a in args.split()]
                run_env = {**os.environ, **env, "FLOWSPIKE_BUILD_PROFILE": profile,
                           "CARGO_NET_OFFLINE": "true"}
                run_env.pop("CARGO_TARGET_DIR", None)  # the image's default: `target` in WORKDIR
                if build_dir is not None:
                    run_env["CARGO_BUILD_BUILD_DIR"] = str(build_dir)
                out = subprocess.run([str(a) for a in argv], cwd=fs.path("."), env=run_env,
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
                    tracked = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True,
                                             text=True).stdout.split()
                    left_out = [t for t in tracked if t not in ctx]
                    hint = (f"\ntracked files the context leaves out ({dockerignore.name}): "
                            + ", ".join(left_out[:20])) if left_out else ""
                    return fail(f"RUN {args} failed (exit {out.returncode}):\n{tail}{hint}")
                ran.append(" ".join(args.split()[2:]))

        # The runtime stage: what it copies from this stage exists, and the binary runs there.
        rt = StageFs(work / "runtime")
        for word, args in final["ins"]:
            if word != "COPY":
                continue
            flags, srcs, dest = copy_args(args)
            if flags.get("from") != name:
                continue
            for src in srcs:
                if not fs.path(src).is_file():
                    return fail(f"the runtime copies {src} from {name}, which the stage does not produce")
                rt.path(dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(fs.path(src), rt.path(dest))
        entry = [a for w, a in final["ins"] if w == "ENTRYPOINT"]
        binary_path = re.findall(r'"([^"]+)"', entry[-1])[0] if entry else "/usr/local/bin/flowspike"
        binary = rt.path(binary_path)
        if not binary.is_file():
            return fail(f"ENTRYPOINT {binary_path} is no file the runtime stage copies")
        dynamic = subprocess.run(["readelf", "-d", "-W", str(binary)], capture_output=True, text=True)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout)
        extra = sorted(set(needed) - RUNTIME_LIBS)
        if dynamic.returncode != 0 or not needed:
            return fail(f"readelf -d {binary_path}: {dynamic.stderr.strip() or 'no NEEDED entries'}")
        if extra:
            return fail(f"{binary_path} needs {', '.join(extra)}, which debian 13's libc6/libgcc-s1 do not ship")
        versions = subprocess.run(["readelf", "-V", "-W", str(binary)], capture_output=True, text=True)
        glibc = sorted({tuple(int(x) for x in v.split(".")) for v in
                        re.findall(r"Name: GLIBC_(\d+(?:\.\d+)+)", versions.stdout)})
        if "GLIBC_PRIVATE" in versions.stdout:
            return fail(f"{binary_path} needs GLIBC_PRIVATE symbols")
        if not glibc or glibc[-1][:2] > RUNTIME_GLIBC:
            return fail(f"{binary_path} needs GLIBC_{'.'.join(map(str, glibc[-1])) if glibc else '?'}, "
                        f"newer than trixie's {'.'.join(map(str, RUNTIME_GLIBC))}")
        # `--version` as the runtime's USER, in a directory that user may read.
        users = [a for w, a in final["ins"] if w == "USER"]
        uid, _, gid = (users[-1] if users else "0").partition(":")
        for d in [work, *binary.relative_to(work).parents]:
            os.chmod(work / d, 0o755)
        cmd = [str(binary), "--version"]
        if os.geteuid() == 0:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups", *cmd]
        ver = subprocess.run(cmd, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
                             capture_output=True, text=True)
        if ver.returncode != 0 or not ver.stdout.startswith("flowspike "):
            return fail(f"{binary_path} --version as {uid}:{gid}: exit {ver.returncode} {ver.stderr.strip()}")
        as_user = f"{uid}:{gid}" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root: USER not emulated)"
        report.ok("image", dockerfile,
                  f"context: {len(ctx)} files by {dockerignore.name}; {name} stage ran "
                  + ", ".join(ran) + f" ({profile} profile); runtime {binary_path} needs "
                  + ", ".join(needed) + f", GLIBC <= {'.'.join(map(str, glibc[-1]))}; "
                  + f"--version as {as_user}: {ver.stdout.strip()}")


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
    ap.add_argument("--dockerignore", type=Path, help="image: default: <Dockerfile>.dockerignore, else .dockerignore")
    ap.add_argument("--build-dir", type=Path, help="image: cargo build directory to share dependency artifacts with")
    ap.add_argument("--profile", default="dev", help="image: cargo profile of the builder stage (default: dev)")
    ap.add_argument("--context-file", action="append", default=[], metavar="REL=PATH",
                    help="image: PATH instead of the context's file REL (tests: a broken stub list)")
    ap.add_argument("--keep", action="store_true", help="image: keep the work directory")
    a = ap.parse_args()
    report = Report(a.root)
    templates = a.template or sorted(
        p for p in (a.root / "infra" / "cloudformation").glob("*") if p.suffix in (".yaml", ".yml", ".json")
    )
    if not templates:
        print("FAIL: no templates found under infra/cloudformation", file=sys.stderr)
        return 1
    only = set(a.only.split(","))
    unknown = only - {"lint", "iam", "docker", "cli", "modes", "image"}
    if unknown:
        ap.error(f"unknown checks: {', '.join(sorted(unknown))}")
    if "lint" in only:
        check_lint(report, templates)
    if "iam" in only:
        check_iam(report, templates)
    if "docker" in only:
        check_docker(report, a.dockerfile or a.root / "infra" / "Dockerfile", templates)
    if "image" in only:
        replaced = {rel: Path(path) for rel, _, path in (c.partition("=") for c in a.context_file)}
        check_image(report, a.dockerfile or a.root / "infra" / "Dockerfile", a.root, a.dockerignore,
                    a.build_dir, a.profile, replaced, a.keep)
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
