//! CloudStack's error shape: HTTP status = `errorcode`, plus `cserrorcode` and text.

/// An error as CloudStack reports it, either on the call itself or in a failed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsError {
    pub code: u16,
    pub cs_code: i64,
    pub text: String,
}

impl CsError {
    /// `InvalidParameterValueException`: 431, cserrorcode 4350.
    pub fn param(text: impl Into<String>) -> Self {
        CsError {
            code: 431,
            cs_code: 4350,
            text: text.into(),
        }
    }

    /// `CloudRuntimeException` (or any other runtime exception): 530, cserrorcode 4250.
    pub fn internal(text: impl Into<String>) -> Self {
        CsError {
            code: 530,
            cs_code: 4250,
            text: text.into(),
        }
    }

    /// `InsufficientCapacityException` (an `InsufficientAddressCapacityException`, say):
    /// 533, cserrorcode 4325.
    pub fn insufficient_capacity(text: impl Into<String>) -> Self {
        CsError {
            code: 533,
            cs_code: 4325,
            text: text.into(),
        }
    }

    /// `ParamProcessWorker` refusing an id that does not resolve to an entity.
    pub fn bad_id(command: &str, name: &str, value: &str) -> Self {
        CsError {
            code: 431,
            cs_code: 9999,
            text: format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter {name} value={value} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
                command.to_lowercase()
            ),
        }
    }

    /// `ParamProcessWorker` refusing a call without a required parameter.
    pub fn missing(command: &str, name: &str) -> Self {
        CsError {
            code: 431,
            cs_code: 9999,
            text: format!(
                "Unable to execute API command {} due to missing parameter {name}",
                command.to_lowercase()
            ),
        }
    }

    /// Signature or credential failure.
    pub fn unauthorized() -> Self {
        CsError {
            code: 401,
            cs_code: 9999,
            text: "unable to verify user credentials and/or request signature".into(),
        }
    }
}
