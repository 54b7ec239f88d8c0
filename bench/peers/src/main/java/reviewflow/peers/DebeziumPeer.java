package reviewflow.peers;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * Peer A: Debezium's PostgreSQL connector in Kafka Connect standalone (a child JVM, as
 * `connect-standalone.sh` would run it) drains an existing pgoutput slot into Kafka. This JVM
 * only launches it, watches the task's state over Connect's REST API and counts the records in
 * the change topic by its end offsets (what the broker has acknowledged), then stops it.
 */
final class DebeziumPeer {
    private static final Set<String> OPTIONS = Set.of("pg-host", "pg-port", "pg-user", "pg-password",
            "pg-database", "slot", "publication", "bootstrap", "topic-prefix", "expect", "timeout-s",
            "partitions", "table");
    private static final String CONNECTOR = "reviewflow-bench-debezium";
    static final String CONVERTER = "org.apache.kafka.connect.json.JsonConverter (schemas.enable=false)";

    private DebeziumPeer() {}

    static Result run(List<String> argv) throws Exception {
        Args args = new Args(argv, OPTIONS);
        long expect = args.getLong("expect");
        long timeoutS = args.getLong("timeout-s", 900);
        String bootstrap = args.get("bootstrap");
        String table = args.get("table", "public.reviews");
        String topic = args.get("topic-prefix") + "." + table;
        int partitions = (int) args.getLong("partitions", 3);
        if (expect <= 0) {
            throw new PeerException("--expect must be positive");
        }

        Path dir = Files.createTempDirectory("reviewflow-debezium-");
        int restPort = freePort();
        Path worker = dir.resolve("worker.properties");
        Path connector = dir.resolve("connector.properties");
        store(worker, workerConfig(bootstrap, dir, restPort));
        store(connector, connectorConfig(args, table));

        try (EndOffsets offsets = new EndOffsets(bootstrap, topic)) {
            offsets.ensureTopic(partitions);
            // A topic left by an earlier run with the same prefix: count only what is new.
            long baseline = offsets.total();
            if (baseline > 0) {
                Proc.log("topic " + topic + " already holds " + baseline + " records; counting only new ones");
            }
            Process connect = null;
            try {
                long launched = System.nanoTime();
                connect = launch(worker, connector);
                String pid = Long.toString(connect.pid());
                long deadline = launched + TimeUnit.SECONDS.toNanos(timeoutS);
                long streaming = waitForRunningTask(connect, restPort, deadline);
                Proc.log("connector task running after " + fmt(Proc.seconds(launched, streaming)) + " s; draining slot");

                long seen = 0;
                long lastLog = System.nanoTime();
                while (true) {
                    seen = offsets.total() - baseline;
                    long now = System.nanoTime();
                    if (seen >= expect) {
                        break;
                    }
                    if (!connect.isAlive()) {
                        throw new PeerException("Kafka Connect exited (code " + connect.exitValue() + ") after "
                                + seen + " of " + expect + " records; its log is above");
                    }
                    if (now > deadline) {
                        throw new PeerException("timed out after " + timeoutS + " s with " + seen + " of "
                                + expect + " records in " + topic + " (is the backlog in slot "
                                + args.get("slot") + "? raise --timeout-s?)");
                    }
                    if (now - lastLog > TimeUnit.SECONDS.toNanos(5)) {
                        Proc.log(seen + " of " + expect + " records");
                        lastLog = now;
                    }
                    Thread.sleep(20);
                }
                long done = System.nanoTime();
                long peak = Proc.peakRssKb(pid);
                if (seen > expect) {
                    Proc.log("warning: " + seen + " records arrived, more than the " + expect + " expected");
                }
                double s = Proc.seconds(streaming, done);
                return new Result()
                        .put("peer", "debezium")
                        .put("records", expect)
                        .put("seconds", s)
                        .put("records_per_s", expect / s)
                        .put("startup_seconds", Proc.seconds(launched, streaming))
                        .put("peak_rss_kb", peak)
                        .put("converter", CONVERTER)
                        .put("topic", topic);
            } finally {
                if (connect != null) {
                    stop(connect);
                }
                deleteTree(dir);
            }
        }
    }

    static Properties workerConfig(String bootstrap, Path dir, int restPort) {
        Properties p = new Properties();
        p.setProperty("bootstrap.servers", bootstrap);
        p.setProperty("key.converter", "org.apache.kafka.connect.json.JsonConverter");
        p.setProperty("value.converter", "org.apache.kafka.connect.json.JsonConverter");
        p.setProperty("key.converter.schemas.enable", "false");
        p.setProperty("value.converter.schemas.enable", "false");
        // A fresh offsets file: no stored position, so the connector starts where the slot is.
        p.setProperty("offset.storage.file.filename", dir.resolve("offsets").toString());
        p.setProperty("listeners", "http://127.0.0.1:" + restPort);
        // The producer keeps Connect's defaults (acks=all, idempotence on, one request in flight).
        return p;
    }

    static Properties connectorConfig(Args args, String table) {
        Properties p = new Properties();
        p.setProperty("name", CONNECTOR);
        p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        p.setProperty("tasks.max", "1");
        p.setProperty("database.hostname", args.get("pg-host"));
        p.setProperty("database.port", args.get("pg-port"));
        p.setProperty("database.user", args.get("pg-user"));
        p.setProperty("database.password", args.get("pg-password"));
        p.setProperty("database.dbname", args.get("pg-database"));
        p.setProperty("topic.prefix", args.get("topic-prefix"));
        p.setProperty("table.include.list", table);
        p.setProperty("plugin.name", "pgoutput");
        p.setProperty("slot.name", args.get("slot"));
        p.setProperty("slot.drop.on.stop", "false");
        p.setProperty("publication.name", args.get("publication"));
        p.setProperty("publication.autocreate.mode", "disabled");
        // The backlog waits in the slot; no copy of the table's existing rows.
        p.setProperty("snapshot.mode", "no_data");
        return p;
    }

    private static Process launch(Path worker, Path connector) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>();
        cmd.add(java);
        cmd.addAll(List.of(System.getProperty("peers.connect.jvm", "-Xms256m -Xmx1g").trim().split("\\s+")));
        cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
        cmd.add("-Dorg.slf4j.simpleLogger.log.io.debezium=info");
        cmd.add("-Dorg.slf4j.simpleLogger.showDateTime=true");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("org.apache.kafka.connect.cli.ConnectStandalone");
        cmd.add(worker.toString());
        cmd.add(connector.toString());
        Proc.log("starting Kafka Connect standalone: " + String.join(" ", cmd.subList(0, 3)) + " ...");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        // Its log goes to our stderr: stdout is kept for the result line.
        Thread pump = new Thread(() -> copy(p.getInputStream(), System.err), "connect-log");
        pump.setDaemon(true);
        pump.start();
        return p;
    }

    /** Polls the task's status until RUNNING; returns the instant it was first seen so. */
    private static long waitForRunningTask(Process connect, int port, long deadline) throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        HttpRequest status = HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + port + "/connectors/" + CONNECTOR + "/status"))
                .timeout(Duration.ofSeconds(2)).build();
        while (true) {
            if (!connect.isAlive()) {
                throw new PeerException("Kafka Connect exited (code " + connect.exitValue() + ") before its task ran; its log is above");
            }
            if (System.nanoTime() > deadline) {
                throw new PeerException("timed out waiting for the Debezium task to start");
            }
            try {
                HttpResponse<String> r = http.send(status, HttpResponse.BodyHandlers.ofString());
                String body = r.body();
                if (r.statusCode() == 200 && body.contains("\"tasks\":[{")) {
                    if (body.contains("\"FAILED\"")) {
                        throw new PeerException("the Debezium connector failed: " + body);
                    }
                    int tasks = body.indexOf("\"tasks\"");
                    if (body.indexOf("\"RUNNING\"", tasks) > 0) {
                        return System.nanoTime();
                    }
                }
            } catch (IOException e) {
                // REST server not up yet.
            }
            Thread.sleep(20);
        }
    }

    private static void stop(Process connect) {
        connect.destroy();
        try {
            if (!connect.waitFor(30, TimeUnit.SECONDS)) {
                Proc.log("Kafka Connect did not stop in 30 s; killing it");
                connect.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            connect.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    private static void copy(InputStream in, OutputStream out) {
        byte[] buf = new byte[8192];
        try (in) {
            int n;
            while ((n = in.read(buf)) >= 0) {
                out.write(buf, 0, n);
                out.flush();
            }
        } catch (IOException e) {
            // The child is gone.
        }
    }

    private static void store(Path file, Properties p) throws IOException {
        try (OutputStream out = Files.newOutputStream(file)) {
            p.store(out, "written by bench/peers (reviewflow bench)");
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException e) {
            Proc.log("could not remove " + dir + ": " + e);
        }
    }

    private static String fmt(double s) {
        return String.format(java.util.Locale.ROOT, "%.2f", s);
    }

}
