//! Just enough of an HTTP/1.1 client for the agent's admin API (readiness, status, reload) and
//! the demo's traffic: one request, its response read by `content-length`, chunks, or to the end of the
//! stream. Plain TCP or TLS underneath.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response, its body as text.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// The server said it closes the connection (`connection: close`).
    pub close: bool,
}

/// Sends `METHOD path` on `conn` and reads the response. With `close`, asks the server to
/// close the connection afterwards.
pub fn exchange<S: Read + Write>(
    conn: &mut BufReader<S>,
    method: &str,
    host: &str,
    path: &str,
    close: bool,
) -> io::Result<Response> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: {connection}\r\n\r\n"
    );
    let stream = conn.get_mut();
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    read_response(conn)
}

/// One request on a new plain-TCP connection from the calling thread's namespace, `timeout`
/// for connecting and for each read and write.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> io::Result<Response> {
    request_with(addr, method, path, timeout, timeout)
}

/// As [`request`], with a read and write timeout of its own (`io_timeout`): the admin API
/// answers a reload only once it is applied.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    exchange(
        &mut BufReader::new(stream),
        method,
        &addr.to_string(),
        path,
        true,
    )
}

fn read_response<R: BufRead>(conn: &mut R) -> io::Result<Response> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP status line: {:?}", line.trim_end())))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside the headers".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("bad content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        read_chunks(conn, &mut body)?;
    } else if let Some(length) = length {
        body.resize(length, 0);
        conn.read_exact(&mut body)?;
    } else {
        conn.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

fn read_chunks<R: BufRead>(conn: &mut R, body: &mut Vec<u8>) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {:?}", line.trim_end())))?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        line.clear();
        conn.read_line(&mut line)?;
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_chunked_and_unframed_answers() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        let got = read_response(&mut &plain[..]).ok();
        assert_eq!(got.map(|r| (r.status, r.body)), Some((200, "ok\n".into())));
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let got = read_response(&mut &chunked[..]).ok();
        assert_eq!(
            got.map(|r| (r.status, r.body, r.close)),
            Some((400, "abcde".into(), true))
        );
        let unframed = b"HTTP/1.1 200 OK\r\n\r\nto the end";
        let got = read_response(&mut &unframed[..]).ok();
        assert_eq!(got.map(|r| r.body), Some("to the end".into()));
        assert!(read_response(&mut &b"garbage\r\n\r\n"[..]).is_err());
    }
}
