//! Listening sockets: opening TCP and Unix listeners with errors that say how to fix them. A
//! leaf used by the receiver, the OTLP receivers and the local web view.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::{TcpListener, UnixListener};

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Someone else listens there.
    #[error(
        "cannot listen on {addr}: the address is already in use (another trace agent or another \
         program holds it). Pick another port with `trace-agent run --port <N>`, \
         DD_APM_RECEIVER_PORT=<N> or `apm_config.receiver_port: <N>` in datadog.yaml"
    )]
    AddrInUse {
        /// The address.
        addr: String,
    },
    /// Any other socket error.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn bind_error(addr: String, source: std::io::Error) -> BindError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        BindError::AddrInUse { addr }
    } else {
        BindError::Other { addr, source }
    }
}

/// Opens the TCP listener.
///
/// # Errors
/// [`BindError::AddrInUse`] with the fix when the port is taken.
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr.to_string(), e))
}

/// Opens the Unix socket (removing a stale socket file first; mode 0722).
///
/// # Errors
/// When the socket cannot be created.
pub fn bind_unix(path: &Path) -> Result<UnixListener, BindError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        // A live socket belongs to another agent; only a stale one is replaced.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::AddrInUse { addr: shown });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| bind_error(shown.clone(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o722)).map_err(|e| bind_error(shown, e))?;
    Ok(listener)
}
