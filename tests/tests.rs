//! Integration tests: drive the real `flowspike` executable against real files and real emulators
//! (`moto_server`, installed and put on PATH by `tests/run.sh`, and `kinesis-local`, installed by
//! it under `tests/node/`), each started here on 127.0.0.1 ports of its own.

mod bench;
mod consume;
mod detections;
mod faults;
mod findings;
mod firehose;
mod infra;
mod lease;
mod parse;
mod replay;
mod report;
mod reshard;
mod s3;
mod util;
