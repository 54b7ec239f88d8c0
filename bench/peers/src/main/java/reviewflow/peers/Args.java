package reviewflow.peers;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** `--name value` command-line options; unknown or missing ones fail with a message naming them. */
final class Args {
    private final Map<String, String> values = new HashMap<>();

    Args(List<String> args, Set<String> known) {
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (!a.startsWith("--") || !known.contains(a.substring(2))) {
                throw new PeerException("unknown argument " + a + " (expected one of --" + String.join(", --", known) + ")");
            }
            if (i + 1 >= args.size()) {
                throw new PeerException(a + " needs a value");
            }
            values.put(a.substring(2), args.get(++i));
        }
    }

    String get(String name) {
        String v = values.get(name);
        if (v == null) {
            throw new PeerException("missing --" + name);
        }
        return v;
    }

    String get(String name, String fallback) {
        return values.getOrDefault(name, fallback);
    }

    long getLong(String name, long fallback) {
        String v = values.get(name);
        if (v == null) {
            return fallback;
        }
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new PeerException("--" + name + " must be an integer, got " + v);
        }
    }

    long getLong(String name) {
        get(name);
        return getLong(name, 0);
    }
}
