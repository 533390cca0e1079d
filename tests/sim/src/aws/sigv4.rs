//! The SigV4 `Authorization` header check: present and well formed, scoped to a service the
//! simulator serves and to its region. Signatures are not verified (any access key is accepted;
//! no real credentials exist anywhere in the simulator).

use super::AwsError;

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Access key id.
    pub access_key: String,
    /// `yyyymmdd`.
    pub date: String,
    /// Region of the scope.
    pub region: String,
    /// Service of the scope (`eks`, `autoscaling`).
    pub service: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-west-2/eks/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=…`; the errors are the ones AWS answers.
pub fn parse(header: Option<&str>) -> Result<Credential, AwsError> {
    let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Err(AwsError::new(
            "MissingAuthenticationTokenException",
            403,
            "Missing Authentication Token",
        ));
    };
    let Some(rest) = h.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(AwsError::new(
            "IncompleteSignatureException",
            403,
            format!("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header and the 'AWS4-HMAC-SHA256' algorithm. Authorization={h}"),
        ));
    };
    let mut credential = None;
    let mut signed = false;
    let mut signature = false;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if part.starts_with("SignedHeaders=") {
            signed = true;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit());
        }
    }
    let missing = |what: &str| {
        AwsError::new(
            "IncompleteSignatureException",
            403,
            format!("Authorization header requires '{what}' parameter. Authorization={h}"),
        )
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    if !signed {
        return Err(missing("SignedHeaders"));
    }
    if !signature {
        return Err(missing("Signature"));
    }
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts[4] != "aws4_request" || parts[0].is_empty() || parts[1].len() != 8 {
        return Err(AwsError::new(
            "IncompleteSignatureException",
            403,
            format!("Credential should be scoped to a valid region. Credential={credential}"),
        ));
    }
    Ok(Credential {
        access_key: parts[0].into(),
        date: parts[1].into(),
        region: parts[2].into(),
        service: parts[3].into(),
    })
}

/// Checks the scope's region against the simulator's.
pub fn check_region(c: &Credential, region: &str) -> Result<(), AwsError> {
    if c.region == region {
        return Ok(());
    }
    Err(AwsError::new(
        "InvalidSignatureException",
        403,
        format!(
            "Credential should be scoped to a valid region, not '{}'. The simulated fleet is in '{region}'.",
            c.region
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-west-2/eks/aws4_request, SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let c = parse(Some(h)).unwrap();
        assert_eq!((c.region.as_str(), c.service.as_str()), ("us-west-2", "eks"));
    }

    #[test]
    fn rejects_missing_and_malformed() {
        assert_eq!(
            parse(None).unwrap_err().code,
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            parse(Some("Bearer x")).unwrap_err().code,
            "IncompleteSignatureException"
        );
        assert_eq!(
            parse(Some("AWS4-HMAC-SHA256 Credential=a/b/c")).unwrap_err().code,
            "IncompleteSignatureException"
        );
    }
}
