//! The messages of Flight's session actions (`SetSessionOptions`, `GetSessionOptions`,
//! `CloseSession`, Flight.proto since Arrow 15), which arrow-flight 59 does not
//! generate. Field numbers and types are the protocol's.

use std::collections::HashMap;

/// One option's value (`SessionOptionValue`); none means "remove the option".
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub(super) option_value: Option<OptionValue>,
}

/// The kinds of value an option may take.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum OptionValue {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(sfixed64, tag = "3")]
    Int64(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    StringList(StringListValue),
}

/// A list of strings (`SessionOptionValue.StringListValue`).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub(super) values: Vec<String>,
}

/// `SetSessionOptionsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub(super) session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult`: the options that were not set, and why.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub(super) errors: HashMap<String, SetSessionOptionError>,
}

/// `SetSessionOptionsResult.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SetSessionOptionError {
    #[prost(int32, tag = "1")]
    pub(super) value: i32,
}

/// `SetSessionOptionsResult.ErrorValue`: an option this server does not know.
pub(super) const INVALID_NAME: i32 = 1;
/// `SetSessionOptionsResult.ErrorValue`: a value the option cannot take.
pub(super) const INVALID_VALUE: i32 = 2;

/// `GetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub(super) session_options: HashMap<String, SessionOptionValue>,
}

/// `CloseSessionResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    pub(super) status: i32,
}

/// `CloseSessionResult.Status`: the session is closed.
pub(super) const CLOSED: i32 = 1;
