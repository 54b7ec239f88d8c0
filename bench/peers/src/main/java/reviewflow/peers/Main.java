package reviewflow.peers;

import java.util.Arrays;
import java.util.List;

/**
 * Entry point of both peers: `debezium ...` or `streams ...`. Progress goes to stderr; the last
 * line of stdout is the result as one JSON object; any failure exits non-zero with one message.
 */
public final class Main {
    public static void main(String[] argv) {
        int code;
        try {
            if (argv.length == 0) {
                throw new PeerException("usage: run debezium|streams --option value ...");
            }
            List<String> rest = Arrays.asList(argv).subList(1, argv.length);
            Result result = switch (argv[0]) {
                case "debezium" -> DebeziumPeer.run(rest);
                case "streams" -> StreamsPeer.run(rest);
                case "check-streams" -> StreamsCheck.run(rest);
                default -> throw new PeerException("unknown peer " + argv[0] + " (debezium or streams)");
            };
            System.out.println(result.json());
            System.out.flush();
            code = 0;
        } catch (PeerException e) {
            System.err.println("peer failed: " + e.getMessage());
            if (e.getCause() != null) {
                e.getCause().printStackTrace();
            }
            code = 1;
        } catch (Exception e) {
            System.err.println("peer failed: " + e);
            e.printStackTrace();
            code = 1;
        }
        // Kafka clients and Connect leave non-daemon threads behind on failure paths.
        System.exit(code);
    }
}
