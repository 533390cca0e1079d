//! A minimal HTTP/1.1 client (one request per connection, `Connection: close`) for the simulator's
//! plain-HTTP statistics and fault endpoints.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, Result};

/// Sends `method url` with an optional JSON `body`; returns the status and the body.
pub async fn request(method: &str, url: &str, body: Option<&serde_json::Value>) -> Result<(u16, String)> {
    let err = |detail: String| Error::Http {
        method: method.to_string(),
        url: url.to_string(),
        detail,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err("only http:// URLs are supported".into()))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect(host)
        .await
        .map_err(|e| err(format!("connect: {e}")))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| err(format!("write: {e}")))?;
    stream
        .write_all(body.as_bytes())
        .await
        .map_err(|e| err(format!("write: {e}")))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| err(format!("read: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err(format!("no HTTP response: {text}")))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(format!("no status line: {head}")))?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// GETs `url` and parses the JSON body (status 200 required).
pub async fn get_json(url: &str) -> Result<serde_json::Value> {
    json_of("GET", url, request("GET", url, None).await?)
}

/// Sends `method url` with a JSON body and parses the JSON answer (status 200 required).
pub async fn send_json(method: &str, url: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
    json_of(method, url, request(method, url, Some(body)).await?)
}

fn json_of(method: &str, url: &str, (status, body): (u16, String)) -> Result<serde_json::Value> {
    if status != 200 {
        return Err(Error::Http {
            method: method.into(),
            url: url.into(),
            detail: format!("status {status}: {body}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| Error::Http {
        method: method.into(),
        url: url.into(),
        detail: format!("not JSON ({e}): {body}"),
    })
}

/// Joins a chunked body's chunks.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
