package reviewflow.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.time.Duration;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Checks the streams peer's output against the truth computed by SQL from `reviews`: for every
 * course and every 91-day window (UTC days D..D+90) holding a review, the last record of its key
 * must carry the same count, rating sum and histogram; a window whose reviews were all retracted
 * must end at count 0. For a small data set in which every review is valid (it fails otherwise).
 */
final class StreamsCheck {
    private static final Set<String> OPTIONS = Set.of("bootstrap", "output-topic", "pg-host", "pg-port",
            "pg-user", "pg-password", "pg-database");

    private StreamsCheck() {}

    static Result run(List<String> argv) throws Exception {
        Args args = new Args(argv, OPTIONS);
        Map<String, JsonNode> output = readAll(args.get("bootstrap"), args.get("output-topic"));
        Map<String, long[]> truth = truth(args);
        int mismatches = 0;
        for (Map.Entry<String, long[]> t : truth.entrySet()) {
            JsonNode o = output.get(t.getKey());
            long[] got = o == null ? null : figures(o);
            if (got == null || !java.util.Arrays.equals(got, t.getValue())) {
                if (mismatches++ < 10) {
                    Proc.log("window " + t.getKey() + ": expected " + java.util.Arrays.toString(t.getValue())
                            + ", output " + (got == null ? "none" : java.util.Arrays.toString(got)));
                }
            }
        }
        for (Map.Entry<String, JsonNode> o : output.entrySet()) {
            if (!truth.containsKey(o.getKey()) && o.getValue().get("count").asLong() != 0) {
                if (mismatches++ < 10) {
                    Proc.log("window " + o.getKey() + " has no review but the output says " + o.getValue());
                }
            }
        }
        if (mismatches > 0) {
            throw new PeerException(mismatches + " of " + truth.size() + " windows differ from the SQL truth");
        }
        Proc.log("all " + truth.size() + " windows equal the SQL truth (" + output.size() + " keys in the output)");
        return new Result().put("check", "streams").put("windows", truth.size()).put("mismatches", 0);
    }

    /** count, rating sum in half stars, stars 0..5. */
    private static long[] figures(JsonNode o) {
        long count = o.get("count").asLong();
        long halves = o.get("rating_avg").isNull() ? 0 : Math.round(o.get("rating_avg").asDouble() * 2 * count);
        long[] f = new long[8];
        f[0] = count;
        f[1] = halves;
        for (int i = 0; i < 6; i++) {
            f[2 + i] = o.get("stars").get(i).asLong();
        }
        return f;
    }

    private static Map<String, long[]> truth(Args args) throws Exception {
        String url = "jdbc:postgresql://" + args.get("pg-host") + ":" + args.get("pg-port") + "/" + args.get("pg-database");
        Map<String, long[]> truth = new TreeMap<>();
        try (Connection c = DriverManager.getConnection(url, args.get("pg-user"), args.get("pg-password"))) {
            try (ResultSet r = c.createStatement().executeQuery(
                    "SELECT count(*) FROM review_verdicts WHERE verdict <> 'valid'")) {
                r.next();
                if (r.getLong(1) != 0) {
                    throw new PeerException("the check needs a data set in which every review is valid");
                }
            }
            String sql = """
                    WITH r AS (SELECT course_id, (rating * 2)::int AS halves, (created_at AT TIME ZONE 'UTC')::date AS d
                               FROM reviews),
                         w AS (SELECT DISTINCT course_id, d - k AS start FROM r, generate_series(0, 90) k)
                    SELECT w.course_id, w.start, count(*), sum(r.halves),
                           count(*) FILTER (WHERE r.halves / 2 = 0), count(*) FILTER (WHERE r.halves / 2 = 1),
                           count(*) FILTER (WHERE r.halves / 2 = 2), count(*) FILTER (WHERE r.halves / 2 = 3),
                           count(*) FILTER (WHERE r.halves / 2 = 4), count(*) FILTER (WHERE r.halves / 2 = 5)
                    FROM w JOIN r ON r.course_id = w.course_id AND r.d BETWEEN w.start AND w.start + 90
                    GROUP BY 1, 2""";
            try (ResultSet r = c.createStatement().executeQuery(sql)) {
                while (r.next()) {
                    LocalDate start = r.getObject(2, LocalDate.class);
                    String key = r.getLong(1) + "@" + start.atStartOfDay().toInstant(ZoneOffset.UTC);
                    long[] f = new long[8];
                    for (int i = 0; i < 8; i++) {
                        f[i] = r.getLong(3 + i);
                    }
                    truth.put(key, f);
                }
            }
        }
        return truth;
    }

    /** The last value of every key of the topic, committed records only. */
    private static Map<String, JsonNode> readAll(String bootstrap, String topic) throws Exception {
        Properties p = new Properties();
        p.setProperty(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.setProperty(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        ObjectMapper json = new ObjectMapper();
        Map<String, JsonNode> last = new HashMap<>();
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
            List<TopicPartition> parts = consumer.partitionsFor(topic).stream()
                    .map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> end = consumer.endOffsets(parts);
            while (parts.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    last.put(r.key(), json.readTree(r.value()));
                }
            }
        }
        return last;
    }
}
