package reviewflow.peers;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Peak resident set size (VmHWM) of a process, from /proc/PID/status. */
final class Proc {
    private Proc() {}

    /** VmHWM in kB, or -1 when the process is gone or /proc does not say. */
    static long peakRssKb(String pid) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc", pid, "status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", ""));
                }
            }
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
        return -1;
    }

    static void log(String message) {
        System.err.println("[peer] " + message);
    }

    static double seconds(long fromNanos, long toNanos) {
        return (toNanos - fromNanos) / 1e9;
    }
}
