//! AWS errors as the two protocols put them on the wire: restJson1 (EKS: status code,
//! `x-amzn-ErrorType` header, `{"message": …, "clusterName": …}` body) and the query protocol
//! (Auto Scaling: `<ErrorResponse><Error><Type/><Code/><Message/></Error>…`).

use serde_json::{json, Map, Value};

/// One AWS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    /// The error code (`ResourceNotFoundException`, `ValidationError`, …).
    pub code: &'static str,
    /// HTTP status.
    pub status: u16,
    /// The message.
    pub message: String,
    /// `clusterName` member (EKS).
    pub cluster: Option<String>,
    /// `nodegroupName` member (EKS).
    pub nodegroup: Option<String>,
    /// `addonName` member (EKS).
    pub addon: Option<String>,
    /// `Sender` or `Receiver` (query protocol).
    pub sender: bool,
}

impl AwsError {
    /// An error with a code and status.
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> AwsError {
        AwsError {
            code,
            status,
            message: message.into(),
            cluster: None,
            nodegroup: None,
            addon: None,
            sender: status < 500,
        }
    }

    /// Names the cluster.
    pub fn cluster(mut self, c: &str) -> AwsError {
        self.cluster = Some(c.to_string());
        self
    }

    /// Names the node group.
    pub fn nodegroup(mut self, n: &str) -> AwsError {
        self.nodegroup = Some(n.to_string());
        self
    }

    /// Names the add-on.
    pub fn addon(mut self, a: &str) -> AwsError {
        self.addon = Some(a.to_string());
        self
    }

    /// EKS `ResourceNotFoundException` (404).
    pub fn not_found(message: impl Into<String>) -> AwsError {
        AwsError::new("ResourceNotFoundException", 404, message)
    }

    /// EKS `No cluster found for name: x.`
    pub fn no_cluster(name: &str) -> AwsError {
        AwsError::not_found(format!("No cluster found for name: {name}.")).cluster(name)
    }

    /// EKS `InvalidParameterException` (400).
    pub fn invalid_parameter(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidParameterException", 400, message)
    }

    /// EKS `InvalidRequestException` (400).
    pub fn invalid_request(message: impl Into<String>) -> AwsError {
        AwsError::new("InvalidRequestException", 400, message)
    }

    /// EKS `ResourceInUseException` (409).
    pub fn in_use(message: impl Into<String>) -> AwsError {
        AwsError::new("ResourceInUseException", 409, message)
    }

    /// EKS `ThrottlingException` (429).
    pub fn throttling() -> AwsError {
        AwsError::new("ThrottlingException", 429, "Rate exceeded")
    }

    /// EKS `BadRequestException` (400): a body that is not JSON.
    pub fn bad_request(message: impl Into<String>) -> AwsError {
        AwsError::new("BadRequestException", 400, message)
    }

    /// Auto Scaling `ValidationError` (400).
    pub fn validation(message: impl Into<String>) -> AwsError {
        AwsError::new("ValidationError", 400, message)
    }

    /// The restJson1 body.
    pub fn json_body(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("clusterName", &self.cluster),
            ("nodegroupName", &self.nodegroup),
            ("addonName", &self.addon),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        m.insert("message".into(), json!(self.message));
        Value::Object(m)
    }

    /// The query-protocol XML body.
    pub fn xml_body(&self, request_id: &str) -> String {
        format!(
            "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\">\n  <Error>\n    <Type>{}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
            if self.sender { "Sender" } else { "Receiver" },
            self.code,
            xml_escape(&self.message)
        )
    }
}

/// Escapes text for XML element content and attributes.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
