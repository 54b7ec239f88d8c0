package reviewflow.peers;

/** A failure the user can act on: printed as one line, exit code 1. */
final class PeerException extends RuntimeException {
    PeerException(String message) {
        super(message);
    }

    PeerException(String message, Throwable cause) {
        super(message, cause);
    }
}
