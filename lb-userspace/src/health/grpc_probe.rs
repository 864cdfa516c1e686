//! The gRPC health probe: one `grpc.health.v1.Health/Check` call over HTTP/2 with prior
//! knowledge, passed when the answer says SERVING. The two tiny protobuf messages are
//! encoded by hand (`HealthCheckRequest { string service = 1; }`,
//! `HealthCheckResponse { ServingStatus status = 1; }`), so no code generation is needed.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::probe::{ProbeError, connect, drive};

/// The method every gRPC health server serves.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Most response bytes read: a health answer is a few bytes.
const MAX_ANSWER_BYTES: usize = 4096;

/// A gRPC health probe of one backend.
#[derive(Debug, Clone)]
pub(super) struct GrpcProbe {
    /// The framed `HealthCheckRequest`, built once.
    request: Bytes,
    authority: String,
}

impl GrpcProbe {
    pub(super) fn new(service: &str, address: SocketAddr) -> Self {
        Self {
            request: frame(&health_check_request(service)),
            authority: address.to_string(),
        }
    }

    pub(super) async fn run(&self, address: SocketAddr) -> Result<(), ProbeError> {
        let request = Request::post(format!("http://{}{CHECK_PATH}", self.authority))
            .header(CONTENT_TYPE, "application/grpc")
            .header(TE, "trailers")
            .header(USER_AGENT, "sluice-health-check")
            .body(Full::new(self.request.clone()))
            .map_err(|e| ProbeError::Request {
                reason: e.to_string(),
            })?;
        let stream = connect(address).await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|source| ProbeError::Http { source })?;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| ProbeError::Http { source })?;
            let status = response.status().as_u16();
            if status != 200 {
                return Err(ProbeError::Status { status });
            }
            let (head, mut body) = response.into_parts();
            let mut message = BytesMut::new();
            let mut trailers = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|source| ProbeError::Http { source })?;
                match frame.into_data() {
                    Ok(data) if message.len() + data.len() <= MAX_ANSWER_BYTES => {
                        message.extend_from_slice(&data);
                    }
                    Ok(_) => return Err(ProbeError::GrpcAnswerTooLong),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
            // A trailers-only answer carries its status in the headers.
            let code = grpc_status(trailers.as_ref().unwrap_or(&head.headers));
            if code != Some(0) {
                return Err(ProbeError::GrpcStatus { code });
            }
            match serving_status(&message) {
                Some(SERVING) => Ok(()),
                status => Err(ProbeError::NotServing { status }),
            }
        };
        drive(exchange, connection).await
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `HealthCheckRequest { service }`: empty for the whole server, else field 1 (a string).
fn health_check_request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC message frame: not compressed, big-endian length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The `status` of a framed `HealthCheckResponse`; `None` when the frame is not one
/// (compressed, cut short, malformed). An absent field is protobuf's default, 0 (UNKNOWN).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if compressed != 0 || rest.len() < len {
        return None;
    }
    let mut message = &rest[..len];
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message)?,
            (_, 0) => drop(varint(&mut message)?),
            (_, 1) => message = message.get(8..)?,
            (_, 2) => {
                let n = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(n..)?;
            }
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_service() {
        assert_eq!(health_check_request(""), b"");
        assert_eq!(health_check_request("a.B"), b"\x0a\x03a.B");
        assert_eq!(&frame(b"xy")[..], b"\0\0\0\0\x02xy");
    }

    #[test]
    fn answers_are_read_whatever_else_they_hold() {
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x01"), Some(1));
        assert_eq!(serving_status(b"\0\0\0\0\x02\x08\x02"), Some(2));
        // Empty message: the default, UNKNOWN.
        assert_eq!(serving_status(b"\0\0\0\0\0"), Some(0));
        // An unknown string field before the status.
        assert_eq!(serving_status(b"\0\0\0\0\x05\x12\x01z\x08\x01"), Some(1));
        // Compressed, cut short, or a field cut short.
        assert_eq!(serving_status(b"\x01\0\0\0\x02\x08\x01"), None);
        assert_eq!(serving_status(b"\0\0\0\0\x09\x08\x01"), None);
        assert_eq!(serving_status(b"\0\0\0\0\x01\x08"), None);
    }
}
