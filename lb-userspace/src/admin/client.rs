//! The CLI's side of the admin API: `sluice status`, `drain`, `enable`, `reload`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot reach the agent's admin API at {addr}: {source} (is `sluice run` running, and is --admin right?)"
    )]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin API at {addr} did not answer in time")]
    Timeout { addr: SocketAddr },
    #[error("talking to the admin API: {0}")]
    Http(#[source] hyper::Error),
    #[error("talking to the admin API: {0}")]
    Request(#[source] http::Error),
    #[error("the agent answered {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

/// A client for one agent.
pub struct AdminClient {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl AdminClient {
    /// `GET path`, returning the body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<String, ClientError> {
        self.call(Method::GET, path).await
    }

    /// `POST path`, returning the body of a 2xx answer.
    pub async fn post(&self, path: &str) -> Result<String, ClientError> {
        self.call(Method::POST, path).await
    }

    async fn call(&self, method: Method, path: &str) -> Result<String, ClientError> {
        let addr = self.addr;
        tokio::time::timeout(Duration::from_secs(30), self.exchange(method, path))
            .await
            .map_err(|_| ClientError::Timeout { addr })?
    }

    async fn exchange(&self, method: Method, path: &str) -> Result<String, ClientError> {
        let addr = self.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(ClientError::Request)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::Refused {
                status,
                body: body.trim().to_string(),
            })
        }
    }
}
