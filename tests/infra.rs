//! Deployment files (`infra/`): the CloudFormation templates lint clean and grant no wildcard resources
//! beyond what AWS requires, the Dockerfile keeps its invariants, and the ECS task definition runs real
//! `flowspike` options. The checks live in `tests/infra_check.py` (cfn-lint is a Python tool); these tests
//! run it on the real files and on broken copies, so a checker that stopped checking would fail here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test venv (`FLOWSPIKE_PYTHON`, set by `tests/run.sh`; else `.venv/bin/python`).
fn python() -> Command {
    let py = std::env::var_os("FLOWSPIKE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        py.exists(),
        "no Python venv at {}: run the tests with `bash tests/run.sh` (it installs cfn-lint)",
        py.display()
    );
    Command::new(py)
}

/// Runs `tests/infra_check.py` with `args` against the `flowspike` binary under test.
fn infra_check(args: &[&str]) -> Output {
    let mut cmd = python();
    cmd.arg(root().join("tests/infra_check.py"))
        .arg("--root")
        .arg(root())
        .arg("--flowspike")
        .arg(env!("CARGO_BIN_EXE_flowspike"))
        .args(args);
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that the check passed and printed each of `parts`; returns its standard output.
fn assert_passes(out: &Output, parts: &[&str]) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "infra_check failed:\n{stdout}\n{stderr}");
    for part in parts {
        assert!(stdout.contains(part), "missing {part:?} in:\n{stdout}");
    }
    stdout
}

/// Asserts that the check failed (exit 1) for `reason`; `case` names what was broken.
fn assert_fails_for(out: &Output, reason: &str, case: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "accepted {case}:\n{stdout}\n{stderr}");
    assert!(stderr.contains(reason), "missing {reason:?} in:\n{stderr}");
}

/// Writes `content` to `dir/name` and returns the path as a string.
fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write a test file");
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// A template with one role whose policy has one statement (`actions` on `resource`).
fn role_template(actions: &str, resource: &str) -> String {
    format!(
        r#"AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{ Service: ecs-tasks.amazonaws.com }}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: p
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: [{actions}]
                Resource: {resource}
"#
    )
}

#[test]
fn infra_files_pass_every_check() {
    let stdout = assert_passes(
        &infra_check(&[]),
        &[
            "ok lint infra/cloudformation/flowspike.yaml",
            "ok iam infra/cloudformation/flowspike.yaml",
            "ok docker infra/Dockerfile",
            "ok cli infra/cloudformation/flowspike.yaml",
            "ok modes infra/cloudformation/flowspike.yaml",
        ],
    );
    // The grants were compared with the AWS calls of the source, mode by mode.
    assert!(
        stdout.contains("(IAM from the code, polling: "),
        "no IAM-from-code summary:\n{stdout}"
    );
    // The one documented wildcard exception, and nothing else.
    assert!(
        stdout.contains("(wildcard resource only for: ecr:GetAuthorizationToken)"),
        "unexpected wildcard exceptions:\n{stdout}"
    );
}

#[test]
fn infra_check_rejects_a_wildcard_resource_on_s3_get_object() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.yaml", &role_template("s3:GetObject", r#""*""#));
    let out = infra_check(&["--only", "iam", "--template", &bad]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "accepted:\n{stdout}\n{stderr}");
    assert!(stderr.contains("Resource '*' for s3:GetObject"), "{stderr}");

    // The same statement with an allow-listed action passes: the failure above is the action's.
    let ok = write(dir.path(), "ok.yaml", &role_template("ecr:GetAuthorizationToken", r#""*""#));
    let out = infra_check(&["--only", "iam", "--template", &ok]);
    assert!(out.status.success(), "rejected the allow-listed action: {:?}", text(&out));

    // An allow-listed action does not carry another one along, and `arn:...:s3:::*` is `*` too.
    let mixed = write(
        dir.path(),
        "mixed.yaml",
        &role_template(
            "ecr:GetAuthorizationToken, s3:PutObject",
            r#"!Sub "arn:${AWS::Partition}:s3:::*""#,
        ),
    );
    let out = infra_check(&["--only", "iam", "--template", &mixed]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "accepted a mixed statement");
    assert!(stderr.contains("for s3:PutObject"), "{stderr}");
}

#[test]
fn infra_check_rejects_options_the_cli_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "td.yaml",
        r#"AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Td:
    Type: AWS::ECS::TaskDefinition
    Properties:
      ContainerDefinitions:
        - Name: flowspike
          Image: flowspike:test
          Command: [consume, --stream, flow-logs, --no-such-flag, "1"]
          Environment:
            - { Name: FLOWSPIKE_NOT_AN_OPTION, Value: "1" }
            - { Name: FLOWSPIKE_OUTPUT_STREAM, Value: spikes }
"#,
    );
    let out = infra_check(&["--only", "cli", "--template", &bad]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "accepted:\n{stdout}\n{stderr}");
    assert!(stderr.contains("has no option --no-such-flag"), "{stderr}");
    assert!(stderr.contains("reads no variable FLOWSPIKE_NOT_AN_OPTION"), "{stderr}");
    assert!(stderr.contains("required option --state"), "{stderr}");
    assert!(
        !stderr.contains("reads no variable FLOWSPIKE_OUTPUT_STREAM"),
        "a real variable was rejected: {stderr}"
    );
}

#[test]
fn infra_check_rejects_a_root_single_stage_floating_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "Dockerfile",
        "FROM rust:1.95-slim\nCOPY . .\nRUN cargo build --release\nUSER root\nENTRYPOINT [\"/usr/local/bin/flowspike\"]\n",
    );
    let out = infra_check(&["--only", "docker", "--dockerfile", &bad]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "accepted:\n{stdout}\n{stderr}");
    for reason in
        ["not multi-stage", "rust:1.95-slim is not pinned", "runs as 'root'", "not copied"]
    {
        assert!(stderr.contains(reason), "missing {reason:?} in:\n{stderr}");
    }
}

/// The real template with `from` replaced by `to` (which must occur exactly once), in `dir`.
fn template_with(dir: &Path, from: &str, to: &str) -> String {
    let real = std::fs::read_to_string(root().join("infra/cloudformation/flowspike.yaml"))
        .expect("read the template");
    assert_eq!(real.matches(from).count(), 1, "{from:?} is not in the template exactly once");
    write(dir, "flowspike.yaml", &real.replacen(from, to, 1))
}

/// For each `(from, to, reason)`: the real template with `from` replaced by `to` fails the modes
/// check, and `reason` is among the failures.
fn assert_each_breaks_the_modes_check(cases: &[(&str, &str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, reason) in cases {
        let bad = template_with(dir.path(), from, to);
        assert_fails_for(&infra_check(&["--only", "modes", "--template", &bad]), reason, to);
    }
}

/// Issue #33: `EnhancedFanOut=true` must set FLOWSPIKE_EFO, grant SubscribeToShard on the consumer
/// ARN only, and keep GetRecords metrics (never emitted under enhanced fan-out) out of alarms.
#[test]
fn infra_check_rejects_an_efo_mode_that_cannot_run() {
    let cases = [
        (
            r#"{ Name: FLOWSPIKE_EFO, Value: "true" }"#,
            r#"{ Name: FLOWSPIKE_EFO, Value: "false" }"#,
            "efo: the consumer does not get FLOWSPIKE_EFO=true",
        ),
        (
            r#"Resource: !Sub "${SourceStream.Arn}/consumer/${EfoConsumer.ConsumerName}:*""#,
            "Resource: !GetAtt SourceStream.Arn",
            "efo: kinesis:SubscribeToShard is not granted on the consumer ARN",
        ),
        (
            "MetricName: !If [UseEfo, SubscribeToShardEvent.Success, GetRecords.Success]",
            "MetricName: GetRecords.Success",
            "efo: NoReaderAlarm reads GetRecords.Success",
        ),
        (
            "kinesis:RegisterStreamConsumer,",
            "",
            "efo: the task role lacks kinesis:RegisterStreamConsumer",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Issue #33: the task alarms must not fire on a new stack or a service scaled to 0 (missing data
/// was `breaching`), must still fire when a wanted task is down, and autoscaling must neither fight
/// DesiredCount nor add tasks past the shard count.
#[test]
fn infra_check_rejects_alarms_and_scaling_that_mean_nothing() {
    let cases = [
        (
            "      ComparisonOperator: GreaterThanThreshold\n      TreatMissingData: notBreaching\n      AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n      OKActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n\n  # NoReaderAlarm",
            "      ComparisonOperator: GreaterThanThreshold\n      TreatMissingData: breaching\n      AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n      OKActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n\n  # NoReaderAlarm",
            "polling: ConsumerDownAlarm is ALARM with a new stack before any data (should be OK)",
        ),
        (
            r#"Expression: "desired - FILL(running, 0)""#,
            r#"Expression: "desired - running""#,
            "polling: ConsumerDownAlarm is OK with a task wanted, no running-task data (should be ALARM)",
        ),
        (
            "DesiredCount: !If [HasAutoScaling, !Ref AWS::NoValue, !Ref DesiredCount]",
            "DesiredCount: !Ref DesiredCount",
            "Service sets DesiredCount under autoscaling",
        ),
        (
            r#"- !Not [!Equals [!Ref AutoScalingMaxTasks, "5"]]"#,
            r#"- !Not [!Equals [!Ref AutoScalingMaxTasks, "55"]]"#,
            "do not bound AutoScalingMaxTasks by the shard count: PROVISIONED shards=1 max=5",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Issue #33: the task role's grants are checked against the AWS calls of the source, so a new SDK
/// call without its grant (or in a file no mode claims) fails; test-only code is left out.
#[test]
fn infra_check_rejects_an_sdk_call_without_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = dir.path().join("crates/consumer/src");
    let other = dir.path().join("crates/newthing/src");
    std::fs::create_dir_all(&consumer).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    write(
        &consumer,
        "extra.rs",
        "use aws_sdk_kinesis::Client;\n\
         pub async fn merge(c: &Client) {\n    let _ = c.merge_shards().stream_name(\"s\").send().await;\n}\n\
         #[cfg(test)]\nmod tests {\n    async fn gone(c: &aws_sdk_kinesis::Client) { let _ = c.delete_stream().send().await; }\n}\n",
    );
    write(
        &other,
        "lib.rs",
        "pub async fn open(c: &aws_sdk_s3::Client) {\n    let _ = c.put_bucket_policy().send().await;\n}\n",
    );
    let sources = dir.path().to_str().unwrap();
    let out = infra_check(&["--only", "modes", "--sources", sources]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "accepted:\n{stdout}\n{stderr}");
    for reason in [
        "polling: the task role lacks kinesis:MergeShards, which the code calls (crates/consumer/src/extra.rs:3 (merge))",
        "AWS call s3:PutBucketPolicy at crates/newthing/src/lib.rs:2 (open) is in no CALL_LOCATIONS entry",
    ] {
        assert!(stderr.contains(reason), "missing {reason:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("DeleteStream"), "test code was counted:\n{stderr}");
}

/// Issue #33: the replay task (ArchiveBucketName set) has its own role, reading the archive only
/// below ArchivePrefix and never writing it.
#[test]
fn infra_check_rejects_a_replay_task_beyond_the_archive_prefix() {
    let cases = [
        (
            r#"Resource: !Sub "arn:${AWS::Partition}:s3:::${ArchiveBucketName}/${ArchivePrefix}*""#,
            r#"Resource: !Sub "arn:${AWS::Partition}:s3:::${ArchiveBucketName}/*""#,
            "replay: the replay task reads 'arn:${AWS::Partition}:s3:::${ArchiveBucketName}/*', not only below ArchivePrefix",
        ),
        (
            "Action: s3:GetObject\n                Resource: !Sub \"arn:${AWS::Partition}:s3:::${ArchiveBucketName}/${ArchivePrefix}*\"",
            "Action: [s3:GetObject, s3:PutObject]\n                Resource: !Sub \"arn:${AWS::Partition}:s3:::${ArchiveBucketName}/${ArchivePrefix}*\"",
            "replay: the replay task may s3:PutObject on the archive",
        ),
        (
            "TaskRoleArn: !GetAtt ReplayTaskRole.Arn",
            "TaskRoleArn: !GetAtt TaskRole.Arn",
            "replay: the replay task may not read the archive (s3:GetObject)",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Issue #32: threat lists in S3 (`ThreatListS3Uris`) reach the replay task as
/// FLOWSPIKE_THREAT_LISTS, and its role may read exactly those objects: not a whole bucket, not
/// without lists, not with a key pattern that lets wildcards in.
#[test]
fn infra_check_rejects_threat_lists_that_are_lost_or_widen_the_grant() {
    let grant =
        r#"Resource: !Split [",", !Join ["arn:*:s3:::", !Split ["s3://", !Ref ThreatListS3Uris]]]"#;
    let replay_env = "(value_delimiter ','); unset when empty.\n            - !If\n              - HasThreatLists\n              - { Name: FLOWSPIKE_THREAT_LISTS, Value: !Ref ThreatListS3Uris }";
    let cases = [
        (
            grant,
            r#"Resource: "arn:*:s3:::intel-feeds/*""#,
            "replay+threat-lists: the replay task may s3:GetObject ['arn:*:s3:::intel-feeds/*'], the threat lists are",
        ),
        (
            replay_env,
            "(value_delimiter ','); unset when empty.\n            - !If\n              - HasThreatLists\n              - { Name: FLOWSPIKE_THREAT_LISTS, Value: \"\" }",
            "replay+threat-lists: the replay task gets FLOWSPIKE_THREAT_LISTS=''",
        ),
        (
            // The grant attached whether or not there are lists: the policy is not in the mode.
            "(one-off task).\n      ManagedPolicyArns: !If [HasThreatLists, [!Ref ThreatListReadPolicy], !Ref AWS::NoValue]",
            "(one-off task).\n      ManagedPolicyArns: [!Ref ThreatListReadPolicy]",
            "replay: ReplayTaskRole attaches ThreatListReadPolicy, no managed policy of the template in this mode",
        ),
        (
            r"/[^,*?$\\s]+(,s3://",
            r"/[^,\\s]+(,s3://",
            "ThreatListS3Uris accepts 's3://intel-feeds/lists/*'",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Issue #32: `consume` and `serve-firehose` run the threat-list detection too: each gets
/// FLOWSPIKE_THREAT_LISTS exactly when ThreatListS3Uris is set, and its role reads exactly those
/// objects (the shared ThreatListReadPolicy): a variable lost or given without lists, a grant lost,
/// widened to a bucket (literal or `!Sub`), made writable, or an AWS managed policy beside it fail.
#[test]
fn infra_check_rejects_services_whose_threat_lists_are_lost_or_widened() {
    let firehose_env = "(default 300 s).\n            - !If\n              - HasThreatLists\n              - { Name: FLOWSPIKE_THREAT_LISTS, Value: !Ref ThreatListS3Uris }\n              - !Ref AWS::NoValue\n";
    let firehose_statements = "- PolicyName: flowspike-firehose\n          PolicyDocument:\n            Version: \"2012-10-17\"\n            Statement:\n";
    let consumer_statements = "- PolicyName: flowspike\n          PolicyDocument:\n            Version: \"2012-10-17\"\n            Statement:\n";
    let widened_firehose = format!(
        "{firehose_statements}              - {{ Effect: Allow, Action: s3:GetObject, Resource: \"arn:*:s3:::intel-feeds/*\" }}\n"
    );
    let widened_consumer = format!(
        "{consumer_statements}              - {{ Effect: Allow, Action: s3:GetObject, Resource: !Sub \"arn:${{AWS::Partition}}:s3:::intel-feeds/*\" }}\n"
    );
    let cases = [
        (
            "says so in its log).\n            - !If\n              - HasThreatLists",
            "says so in its log).\n            - !If\n              - ReplayTask",
            "replay: the consumer task gets FLOWSPIKE_THREAT_LISTS without threat lists",
        ),
        (
            firehose_env,
            "(default 300 s).\n",
            "firehose+threat-lists: the serve-firehose task gets FLOWSPIKE_THREAT_LISTS=None",
        ),
        (
            "(flowspike consume).\n      ManagedPolicyArns: !If [HasThreatLists,",
            "(flowspike consume).\n      ManagedPolicyArns: !If [ReplayTask,",
            "firehose+threat-lists: the consumer task may s3:GetObject [], the threat lists are ['arn:*:s3:::intel-feeds/lists/tor-exits.txt'",
        ),
        (
            firehose_statements,
            widened_firehose.as_str(),
            "firehose: the serve-firehose task may s3:GetObject ['arn:*:s3:::intel-feeds/*'], the threat lists are []",
        ),
        (
            consumer_statements,
            widened_consumer.as_str(),
            "polling: the consumer task may s3:GetObject 'arn:${AWS::Partition}:s3:::intel-feeds/*', which is neither the state, the archive nor a threat list",
        ),
        (
            "Action: s3:GetObject\n            Resource: !Split",
            "Action: [s3:GetObject, s3:PutObject]\n            Resource: !Split",
            "firehose+threat-lists: the serve-firehose task may s3:PutObject on the threat lists",
        ),
        (
            "(state and spike stream).\n      ManagedPolicyArns: !If [HasThreatLists, [!Ref ThreatListReadPolicy], !Ref AWS::NoValue]",
            "(state and spike stream).\n      ManagedPolicyArns: [arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess]",
            "firehose: FirehoseTaskRole attaches arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess, no managed policy of the template",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Issue #33: the Firehose endpoint takes its access key from Secrets Manager only, is reached over
/// HTTPS only, backs failed records up, and receives the VPC flow log.
#[test]
fn infra_check_rejects_a_firehose_endpoint_that_leaks_or_loses() {
    let cases = [
        (
            "Command: [serve-firehose]",
            "Command: [serve-firehose, --access-key, not-a-secret]",
            "firehose: the access key is on the command line",
        ),
        (
            "ValueFrom: !Ref FirehoseAccessKey",
            "ValueFrom: arn:aws:secretsmanager:eu-west-1:123456789012:secret:elsewhere",
            "firehose: FLOWSPIKE_FIREHOSE_ACCESS_KEYS is not a secret from a Secrets Manager secret",
        ),
        (
            "      Port: 443\n      Protocol: HTTPS",
            "      Port: 80\n      Protocol: HTTP",
            "firehose: a listener on port 80 is HTTP",
        ),
        (
            r#"Url: !Sub "https://${FirehoseDomainName}/""#,
            r#"Url: !Sub "http://${FirehoseDomainName}/""#,
            "firehose: FirehoseDeliveryStream delivers to 'http://${FirehoseDomainName}/', not https://",
        ),
        (
            "LogDestinationType: kinesis-data-firehose",
            "LogDestinationType: s3",
            "firehose: no VPC flow log delivers to the delivery stream",
        ),
    ];
    assert_each_breaks_the_modes_check(&cases);
}

/// Every condition of the template is exercised: true in one checked mode, false in another.
#[test]
fn infra_check_rejects_a_condition_no_mode_exercises() {
    assert_each_breaks_the_modes_check(&[(
        "Conditions:\n",
        "Conditions:\n  NeverTrue: !Equals [!Ref EnhancedFanOut, \"maybe\"]\n",
        "condition NeverTrue is never True in MODES",
    )]);
}

/// The target directory of the build this test comes from (`<target>/debug/flowspike`): the image
/// check takes its dependency artifacts from there instead of building them all again.
fn build_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_flowspike"));
    exe.parent().and_then(Path::parent).expect("the binary is in <target>/<profile>/").to_path_buf()
}

/// Runs the `image` check (infra/Dockerfile's builder stage without Docker) with `args`.
///
/// One at a time: every image check builds copies of the context into the same shared build
/// directory, where one test's stub build (`build.sh deps`) could replace the libraries another
/// test's `app` build was about to link — a binary of stubs that prints nothing for `--version`.
fn image_check(args: &[&str]) -> Output {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves the lock poisoned; the next check still runs.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = build_dir();
    let mut all = vec!["--only", "image", "--build-dir", dir.to_str().expect("utf-8 target dir")];
    all.extend_from_slice(args);
    infra_check(&all)
}

/// Issue #33: the image has never been built here (no Docker engine). The builder stage's commands
/// (`infra/image/build.sh deps`, then `app`) run in a copy of the build context as the Dockerfile's
/// COPY instructions see it, and the binary they produce needs only libraries and glibc symbol
/// versions of the Debian 13 runtime and prints its version as the runtime's unprivileged user.
#[test]
fn image_builder_stage_runs_in_its_context_and_the_binary_runs_as_the_runtime_user() {
    let version = format!(": flowspike {}", env!("CARGO_PKG_VERSION"));
    let stdout = assert_passes(
        &image_check(&[]),
        &[
            "ok image infra/Dockerfile",
            "builder stage ran deps, app /out (dev profile)",
            "runtime /usr/local/bin/flowspike needs ",
            "libc.so.6",
            &version,
        ],
    );
    // As root (the test machines) `--version` runs as the Dockerfile's USER; otherwise as the caller.
    assert!(
        stdout.contains("--version as 10001:10001") || stdout.contains("(not root"),
        "--version did not run as an unprivileged user:\n{stdout}"
    );
}

/// Issue #33: the stub list is what keeps the dependency layer building. A bench it misses (the
/// Dockerfile stubbed `parse` and `counter` but not `inflate`: Cargo refused the workspace), a target a
/// manifest starts to name without its stub, and a stub of no target all fail.
#[test]
fn image_check_rejects_stubs_that_miss_or_invent_a_target() {
    // A manifest that names an example (detect's auto-discovered `quality`) needs its stub.
    let detect =
        std::fs::read_to_string(root().join("crates/detect/Cargo.toml")).expect("manifest");
    let dir = tempfile::tempdir().unwrap();
    let named =
        write(dir.path(), "Cargo.toml", &format!("{detect}\n[[example]]\nname = \"quality\"\n"));
    let out = image_check(&["--context-file", &format!("crates/detect/Cargo.toml={named}")]);
    assert_fails_for(&out, "can't find `quality` example", "an example without its stub");

    let real =
        std::fs::read_to_string(root().join("infra/image/stubs.txt")).expect("read stubs.txt");
    let inflate = "bench   bench/benches/inflate.rs\n";
    assert_eq!(real.matches(inflate).count(), 1, "{inflate:?} is not in stubs.txt exactly once");
    let cases = [
        (real.replacen(inflate, "", 1), "can't find `inflate` bench"),
        (
            format!("{real}lib     crates/gone/src/lib.rs\n"),
            "infra/image/stubs.txt stubs crates/gone/src/lib.rs, which is the source of no target",
        ),
    ];
    for (stubs, reason) in cases {
        let bad = write(dir.path(), "stubs.txt", &stubs);
        let out = image_check(&["--context-file", &format!("infra/image/stubs.txt={bad}")]);
        assert_fails_for(&out, reason, "a broken stub list");
    }
}

/// Issue #33: the build sees only what `infra/Dockerfile.dockerignore` lets through: a file a COPY
/// names, or sources the build compiles, left out of the context fail the check.
#[test]
fn image_check_rejects_a_context_that_leaves_out_what_the_build_needs() {
    let real = std::fs::read_to_string(root().join("infra/Dockerfile.dockerignore"))
        .expect("read the dockerignore");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("Cargo.lock\n", "COPY Cargo.lock: not in the build context (left out by bad.dockerignore pattern 'Cargo.lock')"),
        ("crates/retry/src/\n", "tracked files the context leaves out (bad.dockerignore): crates/retry/src/lib.rs"),
    ];
    for (pattern, reason) in cases {
        let bad = write(dir.path(), "bad.dockerignore", &format!("{real}{pattern}"));
        assert_fails_for(&image_check(&["--dockerignore", &bad]), reason, pattern);
    }
}

/// Issue #33: the binary links against the builder's glibc, so the runtime must be the same Debian
/// release; and docs/deploy.md lists what the runtime stage adds to its base.
#[test]
fn infra_check_rejects_a_runtime_of_another_release_or_with_unlisted_files() {
    let real =
        std::fs::read_to_string(root().join("infra/Dockerfile")).expect("read the Dockerfile");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("FROM debian:13.4-slim@", "FROM debian:12.12-slim@", "are different Debian releases"),
        (
            "ca-certificates curl;",
            "ca-certificates curl procps;",
            "does not list the runtime's procps",
        ),
    ];
    for (from, to, reason) in cases {
        assert_eq!(real.matches(from).count(), 1, "{from:?} is not in the Dockerfile exactly once");
        let bad = write(dir.path(), "Dockerfile", &real.replacen(from, to, 1));
        assert_fails_for(&infra_check(&["--only", "docker", "--dockerfile", &bad]), reason, to);
    }
}
