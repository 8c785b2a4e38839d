//! Field names of VPC flow log records (versions 2 to 8 and later).

use std::fmt;

/// How a field's value is typed (used by the JSON renderer and the typed accessors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Free text (ids, names, ARNs, enumerations).
    Text,
    /// An unsigned decimal integer.
    Uint,
    /// An IPv4 or IPv6 address.
    Addr,
}

/// What a value of a field must be: a line any of whose values (other than `-`, absent) is not
/// of its field's type is a damaged line ([`crate::LineErrorKind::BadValue`]), never a record.
///
/// Numbers are unsigned decimal digits (leading zeros allowed) within the field's width;
/// `action`, `log-status` and `flow-direction` take only their documented words. Ids, names and
/// the enumerations AWS extends from time to time (`type`, `pkt-src-aws-service`,
/// `reject-reason`, ...) are free text: any printable ASCII (0x21..=0x7e; spaces separate fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Printable ASCII text.
    Text,
    /// An unsigned integer at most 255.
    U8,
    /// An unsigned integer at most 65,535.
    U16,
    /// An unsigned integer that fits in 64 bits.
    U64,
    /// An IPv4 or IPv6 address (as `std::net::IpAddr` parses it).
    Addr,
    /// `ACCEPT` or `REJECT`.
    Action,
    /// `OK`, `NODATA` or `SKIPDATA`.
    LogStatus,
    /// `ingress` or `egress`.
    FlowDirection,
}

impl ValueType {
    /// True when `v` (a present value, not `-`) is of this type. The naive equivalent is
    /// `naive::naive_value_ok`.
    #[inline(always)]
    pub fn accepts(self, v: &[u8]) -> bool {
        use crate::record::{parse_addr, parse_u64, Action, LogStatus};
        match self {
            ValueType::Text => v.iter().all(|b| (0x21..0x7f).contains(b)),
            ValueType::U8 => parse_u64(v).is_some_and(|x| x <= u64::from(u8::MAX)),
            ValueType::U16 => parse_u64(v).is_some_and(|x| x <= u64::from(u16::MAX)),
            ValueType::U64 => parse_u64(v).is_some(),
            ValueType::Addr => parse_addr(v).is_some(),
            ValueType::Action => Action::from_bytes(v).is_some(),
            ValueType::LogStatus => LogStatus::from_bytes(v).is_some(),
            ValueType::FlowDirection => v == b"ingress" || v == b"egress",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Text => "printable ascii text",
            ValueType::U8 => "an unsigned integer up to 255",
            ValueType::U16 => "an unsigned integer up to 65535",
            ValueType::U64 => "an unsigned 64-bit integer",
            ValueType::Addr => "an ip address",
            ValueType::Action => "ACCEPT or REJECT",
            ValueType::LogStatus => "OK, NODATA or SKIPDATA",
            ValueType::FlowDirection => "ingress or egress",
        })
    }
}

macro_rules! fields {
    ($( $var:ident = $name:literal, $kind:ident, $vt:ident, $ver:literal; )*) => {
        /// A VPC flow log field name (see the AWS "Flow log records" documentation).
        ///
        /// Every documented field has a variant; a name this crate does not know is kept as
        /// [`Field::Unknown`], an index into the owning [`crate::Format`]'s table of unknown names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $(
                #[doc = concat!("`", $name, "` (version ", $ver, ")")]
                $var,
            )*
            /// A field name this crate does not know: index into the format's unknown-name table.
            Unknown(u16),
        }

        #[allow(clippy::enum_variant_names)]
        #[derive(Clone, Copy)]
        enum Index { $( $var, )* }

        /// Number of known (named) fields.
        pub(crate) const KNOWN_COUNT: usize = [$( Index::$var ),*].len();

        impl Field {
            /// Every known field, in documentation order.
            pub const KNOWN: &'static [Field] = &[$( Field::$var ),*];

            /// The AWS name (`srcaddr`, `log-status`, ...); `None` for [`Field::Unknown`].
            pub fn known_name(self) -> Option<&'static str> {
                match self {
                    $( Field::$var => Some($name), )*
                    Field::Unknown(_) => None,
                }
            }

            /// The value type of this field.
            pub fn kind(self) -> FieldKind {
                match self {
                    $( Field::$var => FieldKind::$kind, )*
                    Field::Unknown(_) => FieldKind::Text,
                }
            }

            /// What a value of this field must be ([`ValueType`]; free text for unknown fields).
            pub fn value_type(self) -> ValueType {
                match self {
                    $( Field::$var => ValueType::$vt, )*
                    Field::Unknown(_) => ValueType::Text,
                }
            }

            /// The flow log version that introduced this field (0 for unknown fields).
            pub fn since_version(self) -> u8 {
                match self {
                    $( Field::$var => $ver, )*
                    Field::Unknown(_) => 0,
                }
            }

            /// Looks up an exact AWS field name (with `-`, as in headers and `${...}` formats).
            pub fn from_name(name: &str) -> Option<Field> {
                match name {
                    $( $name => Some(Field::$var), )*
                    _ => None,
                }
            }

            /// Dense index of a known field, `None` for unknown fields.
            #[inline(always)]
            pub(crate) fn known_index(self) -> Option<usize> {
                match self {
                    $( Field::$var => Some(Index::$var as usize), )*
                    Field::Unknown(_) => None,
                }
            }
        }
    };
}

fields! {
    Version = "version", Uint, U8, 2;
    AccountId = "account-id", Text, Text, 2;
    InterfaceId = "interface-id", Text, Text, 2;
    SrcAddr = "srcaddr", Addr, Addr, 2;
    DstAddr = "dstaddr", Addr, Addr, 2;
    SrcPort = "srcport", Uint, U16, 2;
    DstPort = "dstport", Uint, U16, 2;
    Protocol = "protocol", Uint, U8, 2;
    Packets = "packets", Uint, U64, 2;
    Bytes = "bytes", Uint, U64, 2;
    Start = "start", Uint, U64, 2;
    End = "end", Uint, U64, 2;
    Action = "action", Text, Action, 2;
    LogStatus = "log-status", Text, LogStatus, 2;
    VpcId = "vpc-id", Text, Text, 3;
    SubnetId = "subnet-id", Text, Text, 3;
    InstanceId = "instance-id", Text, Text, 3;
    TcpFlags = "tcp-flags", Uint, U16, 3;
    Type = "type", Text, Text, 3;
    PktSrcAddr = "pkt-srcaddr", Addr, Addr, 3;
    PktDstAddr = "pkt-dstaddr", Addr, Addr, 3;
    Region = "region", Text, Text, 4;
    AzId = "az-id", Text, Text, 4;
    SublocationType = "sublocation-type", Text, Text, 4;
    SublocationId = "sublocation-id", Text, Text, 4;
    PktSrcAwsService = "pkt-src-aws-service", Text, Text, 5;
    PktDstAwsService = "pkt-dst-aws-service", Text, Text, 5;
    FlowDirection = "flow-direction", Text, FlowDirection, 5;
    TrafficPath = "traffic-path", Uint, U8, 5;
    ResourceType = "resource-type", Text, Text, 6;
    TgwId = "tgw-id", Text, Text, 6;
    TgwAttachmentId = "tgw-attachment-id", Text, Text, 6;
    TgwSrcVpcAccountId = "tgw-src-vpc-account-id", Text, Text, 6;
    TgwDstVpcAccountId = "tgw-dst-vpc-account-id", Text, Text, 6;
    TgwSrcVpcId = "tgw-src-vpc-id", Text, Text, 6;
    TgwDstVpcId = "tgw-dst-vpc-id", Text, Text, 6;
    TgwSrcSubnetId = "tgw-src-subnet-id", Text, Text, 6;
    TgwDstSubnetId = "tgw-dst-subnet-id", Text, Text, 6;
    TgwSrcEni = "tgw-src-eni", Text, Text, 6;
    TgwDstEni = "tgw-dst-eni", Text, Text, 6;
    TgwSrcAzId = "tgw-src-az-id", Text, Text, 6;
    TgwDstAzId = "tgw-dst-az-id", Text, Text, 6;
    TgwPairAttachmentId = "tgw-pair-attachment-id", Text, Text, 6;
    PacketsLostNoRoute = "packets-lost-no-route", Uint, U64, 6;
    PacketsLostBlackhole = "packets-lost-blackhole", Uint, U64, 6;
    PacketsLostMtuExceeded = "packets-lost-mtu-exceeded", Uint, U64, 6;
    PacketsLostTtlExpired = "packets-lost-ttl-expired", Uint, U64, 6;
    EcsClusterArn = "ecs-cluster-arn", Text, Text, 7;
    EcsClusterName = "ecs-cluster-name", Text, Text, 7;
    EcsContainerInstanceArn = "ecs-container-instance-arn", Text, Text, 7;
    EcsContainerInstanceId = "ecs-container-instance-id", Text, Text, 7;
    EcsContainerId = "ecs-container-id", Text, Text, 7;
    EcsSecondContainerId = "ecs-second-container-id", Text, Text, 7;
    EcsServiceName = "ecs-service-name", Text, Text, 7;
    EcsTaskDefinitionArn = "ecs-task-definition-arn", Text, Text, 7;
    EcsTaskArn = "ecs-task-arn", Text, Text, 7;
    EcsTaskId = "ecs-task-id", Text, Text, 7;
    RejectReason = "reject-reason", Text, Text, 8;
    ResourceId = "resource-id", Text, Text, 9;
    EncryptionStatus = "encryption-status", Uint, U8, 10;
}

impl Field {
    /// Looks up a field name in any of the spellings AWS uses: `srcaddr`, `${srcaddr}`,
    /// `log-status`, or the Parquet column spelling `log_status`.
    pub fn from_any_name(token: &str) -> Option<Field> {
        let name = strip_placeholder(token)?;
        if let Some(f) = Field::from_name(name) {
            return Some(f);
        }
        if name.contains('_') && name.len() <= 64 {
            let mut buf = [0u8; 64];
            let dst = buf.get_mut(..name.len())?;
            for (d, s) in dst.iter_mut().zip(name.bytes()) {
                *d = if s == b'_' { b'-' } else { s };
            }
            return Field::from_name(std::str::from_utf8(dst).ok()?);
        }
        None
    }

    /// True for a field that is typed as a number.
    pub fn is_numeric(self) -> bool {
        self.kind() == FieldKind::Uint
    }
}

/// Strips `${` `}` around a name; `None` when the braces are unbalanced or the name is empty.
pub(crate) fn strip_placeholder(token: &str) -> Option<&str> {
    let name = match token.strip_prefix("${") {
        Some(rest) => rest.strip_suffix('}')?,
        None => token,
    };
    if name.is_empty() || name.contains(['$', '{', '}']) {
        None
    } else {
        Some(name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(n) => f.write_str(n),
            None => match self {
                Field::Unknown(i) => write!(f, "unknown-field-{i}"),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_are_dense() {
        for (i, f) in Field::KNOWN.iter().enumerate() {
            let name = f.known_name().expect("known");
            assert_eq!(Field::from_name(name), Some(*f));
            assert_eq!(f.known_index(), Some(i));
            let underscored = name.replace('-', "_");
            assert_eq!(Field::from_any_name(&underscored), Some(*f), "{underscored}");
            assert_eq!(Field::from_any_name(&format!("${{{name}}}")), Some(*f));
        }
        assert_eq!(Field::KNOWN.len(), KNOWN_COUNT);
    }

    #[test]
    fn spellings() {
        fn check(token: &str, expected: Option<Field>) {
            assert_eq!(Field::from_any_name(token), expected, "{token}");
        }
        check("srcaddr", Some(Field::SrcAddr));
        check("${log-status}", Some(Field::LogStatus));
        check("log_status", Some(Field::LogStatus));
        check("pkt_src_aws_service", Some(Field::PktSrcAwsService));
        check("${srcaddr", None);
        check("${}", None);
        check("nope", None);
        check("2", None);
    }
}
