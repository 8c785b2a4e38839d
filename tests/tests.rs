//! Integration tests: drive the real `flowspike` executable against real files and a real S3
//! emulator (`moto_server`, installed and put on PATH by `tests/run.sh`, started here on 127.0.0.1).

mod consume;
mod firehose;
mod parse;
mod replay;
mod s3;
mod util;
