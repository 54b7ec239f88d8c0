package reviewflow.peers;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Peer B: the original nightly aggregation as Kafka Streams would run it. Per course, 91-day
 * windows hopping by one day on the review's created_at (event time): count, rating average and
 * star histogram, exactly_once_v2, every window update to an output topic. Input: reviews.valid,
 * the same topic and partitions (keyed by course id) the stats worker reads, so no repartition.
 * An update retracts its `before` image and adds its `after`, each in its own event-time windows;
 * a delete retracts. Done when the group's committed offsets (committed in the same transaction
 * as the output) pass the last of the N records.
 */
final class StreamsPeer {
    private static final Set<String> OPTIONS = Set.of("bootstrap", "registry", "topic", "expect",
            "application-id", "timeout-s", "output-topic", "threads", "grace-days");
    static final int WINDOW_DAYS = 91;

    private StreamsPeer() {}

    static Result run(List<String> argv) throws Exception {
        Args args = new Args(argv, OPTIONS);
        String bootstrap = args.get("bootstrap");
        String input = args.get("topic");
        String appId = args.get("application-id");
        String output = args.get("output-topic", appId + ".course-windows");
        long expect = args.getLong("expect");
        long timeoutS = args.getLong("timeout-s", 900);
        int threads = (int) args.getLong("threads", 1);
        long graceDays = args.getLong("grace-days", 1);
        if (expect <= 0) {
            throw new PeerException("--expect must be positive");
        }
        Registry registry = new Registry(args.get("registry"));

        Properties adminProps = new Properties();
        adminProps.setProperty(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            prepare(admin, appId, input, output);
            Path state = Files.createTempDirectory("reviewflow-streams-");
            Progress progress = new Progress();
            KafkaStreams streams = new KafkaStreams(topology(input, output, registry, progress, graceDays),
                    config(bootstrap, appId, state, threads));
            AtomicLong running = new AtomicLong();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            streams.setStateListener((now, before) -> {
                if (now == KafkaStreams.State.RUNNING) {
                    running.compareAndSet(0, System.nanoTime());
                }
            });
            streams.setUncaughtExceptionHandler(e -> {
                failure.compareAndSet(null, e);
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            long launched = System.nanoTime();
            long deadline = launched + TimeUnit.SECONDS.toNanos(timeoutS);
            try {
                streams.start();
                long done = waitUntilCommitted(admin, appId, streams, progress, running, failure, expect, deadline, timeoutS);
                long peak = Proc.peakRssKb("self");
                long processed = progress.count.get();
                if (processed > expect) {
                    Proc.log("warning: processed " + processed + " records, more than the " + expect + " expected");
                }
                double s = Proc.seconds(running.get(), done);
                return new Result()
                        .put("peer", "kafka-streams")
                        .put("records", processed)
                        .put("seconds", s)
                        .put("records_per_s", processed / s)
                        .put("startup_seconds", startup(running.get()))
                        .put("peak_rss_kb", peak)
                        .put("windows_per_record", WINDOW_DAYS)
                        .put("dropped_records", dropped(streams))
                        .put("output_topic", output);
            } finally {
                streams.close(Duration.ofSeconds(30));
                streams.cleanUp();
                try (var files = Files.walk(state)) {
                    files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
                }
            }
        }
    }

    static Topology topology(String input, String output, Registry registry, Progress progress, long graceDays) {
        Serde<Change> changes = Serdes.serdeFrom((topic, c) -> {
            throw new UnsupportedOperationException("the peer only reads changes");
        }, new Change.Decoder(registry));
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.ByteArray(), changes))
                .processValues(() -> new SplitImages(progress), Named.as("split-images"))
                .groupByKey(Grouped.with(Serdes.ByteArray(), Figures.signedSerde()))
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofDays(WINDOW_DAYS), Duration.ofDays(graceDays))
                        .advanceBy(Duration.ofDays(1)))
                .aggregate(Figures::new, (key, image, figures) -> figures.add(image),
                        Materialized.<byte[], Figures, WindowStore<Bytes, byte[]>>as("course-windows")
                                .withKeySerde(Serdes.ByteArray())
                                .withValueSerde(Figures.serde()))
                .toStream()
                .map((window, figures) -> {
                    long course = courseId(window.key());
                    long start = window.window().start();
                    return KeyValue.pair(course + "@" + Instant.ofEpochMilli(start), figures.json(course, start));
                })
                .to(output, Produced.with(Serdes.String(), Serdes.String()));
        return b.build();
    }

    static Properties config(String bootstrap, String appId, Path state, int threads) {
        Properties p = new Properties();
        p.setProperty(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.setProperty(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.setProperty(StreamsConfig.STATE_DIR_CONFIG, state.toString());
        p.setProperty(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.toString(threads));
        p.setProperty(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    /** Fails on a reused application id (it would resume, not start from the earliest offset). */
    private static void prepare(Admin admin, String appId, String input, String output) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
        if (!committed.isEmpty()) {
            throw new PeerException("application id " + appId + " already has committed offsets; pass a fresh --application-id");
        }
        int partitions;
        try {
            partitions = admin.describeTopics(List.of(input)).allTopicNames().get().get(input).partitions().size();
        } catch (ExecutionException e) {
            throw new PeerException("cannot describe input topic " + input + ": " + e.getCause(), e);
        }
        try {
            admin.createTopics(List.of(new NewTopic(output, Optional.of(partitions), Optional.empty()))).all().get();
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw new PeerException("cannot create output topic " + output + ": " + e.getCause(), e);
            }
        }
    }

    private static long waitUntilCommitted(Admin admin, String appId, KafkaStreams streams, Progress progress,
            AtomicLong running, AtomicReference<Throwable> failure, long expect, long deadline, long timeoutS)
            throws Exception {
        long lastLog = System.nanoTime();
        while (true) {
            Throwable e = failure.get();
            if (e != null) {
                throw new PeerException("Kafka Streams failed after " + progress.count.get() + " records: " + e, e);
            }
            if (streams.state() == KafkaStreams.State.ERROR || streams.state() == KafkaStreams.State.NOT_RUNNING) {
                throw new PeerException("Kafka Streams stopped (" + streams.state() + ") after " + progress.count.get() + " records");
            }
            long now = System.nanoTime();
            if (now > deadline) {
                throw new PeerException("timed out after " + timeoutS + " s with " + progress.count.get() + " of "
                        + expect + " records processed (does the input topic hold them? raise --timeout-s?)");
            }
            if (running.get() != 0 && progress.count.get() >= expect && committedPast(admin, appId, progress.next)) {
                return System.nanoTime();
            }
            if (now - lastLog > TimeUnit.SECONDS.toNanos(5)) {
                Proc.log(progress.count.get() + " of " + expect + " records processed, state " + streams.state());
                lastLog = now;
            }
            Thread.sleep(20);
        }
    }

    /** Whether the group has committed, for every partition, past the last record processed. */
    private static boolean committedPast(Admin admin, String appId, Map<TopicPartition, Long> next) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
        for (Map.Entry<TopicPartition, Long> e : Map.copyOf(next).entrySet()) {
            OffsetAndMetadata c = committed.get(e.getKey());
            if (c == null || c.offset() < e.getValue()) {
                return false;
            }
        }
        return true;
    }

    private static double startup(long runningNanos) {
        // The JVM's own start, not this class's: class loading and client setup count too.
        Instant jvmStart = ProcessHandle.current().info().startInstant().orElseThrow();
        Instant runningAt = Instant.now().minusNanos(System.nanoTime() - runningNanos);
        return Duration.between(jvmStart, runningAt).toNanos() / 1e9;
    }

    private static long dropped(KafkaStreams streams) {
        double total = 0;
        for (Map.Entry<MetricName, ? extends Metric> m : streams.metrics().entrySet()) {
            if (m.getKey().name().equals("dropped-records-total") && m.getValue().metricValue() instanceof Double d) {
                total += d;
            }
        }
        return (long) total;
    }

    /** The course id from the record key: an Avro long (zig-zag varint) in the wire format. */
    static long courseId(byte[] key) {
        long raw = 0;
        int shift = 0;
        for (int i = 5; i < key.length; i++) {
            raw |= (long) (key[i] & 0x7f) << shift;
            if ((key[i] & 0x80) == 0) {
                return (raw >>> 1) ^ -(raw & 1);
            }
            shift += 7;
        }
        throw new IllegalArgumentException("record key is not an Avro long in the wire format");
    }

    /** Input records processed, and per partition the offset after the last one. */
    static final class Progress {
        final AtomicLong count = new AtomicLong();
        final Map<TopicPartition, Long> next = new ConcurrentHashMap<>();
    }

    /** A change into its signed images, each stamped with its own created_at as event time. */
    static final class SplitImages implements FixedKeyProcessor<byte[], Change, Figures.Signed> {
        private final Progress progress;
        private FixedKeyProcessorContext<byte[], Figures.Signed> context;
        /** Whether this task has counted an image yet. */
        private boolean forwarded;

        SplitImages(Progress progress) {
            this.progress = progress;
        }

        @Override
        public void init(FixedKeyProcessorContext<byte[], Figures.Signed> context) {
            this.context = context;
        }

        @Override
        public void process(FixedKeyRecord<byte[], Change> record) {
            Change c = record.value();
            if (c.op().equals("t")) {
                // A snapshot opens with a TRUNCATE that voids what the topic held before it:
                // before any image of this task there is nothing to retract, so it passes.
                // After one, the windows would have to forget what they counted, which a
                // hopping-window aggregation cannot do.
                if (forwarded) {
                    throw new IllegalStateException("a TRUNCATE after changes: the windowed aggregation cannot retract them");
                }
            }
            if (c.before() != null) {
                forward(record, c.before(), -1);
            }
            if (c.after() != null) {
                forward(record, c.after(), 1);
            }
            context.recordMetadata().ifPresent(m ->
                    progress.next.merge(new TopicPartition(m.topic(), m.partition()), m.offset() + 1, Math::max));
            progress.count.incrementAndGet();
        }

        private void forward(FixedKeyRecord<byte[], Change> record, Change.Image image, int sign) {
            forwarded = true;
            context.forward(record.withValue(new Figures.Signed(image.courseId(), image.halves(), sign))
                    .withTimestamp(image.createdMs()));
        }
    }
}
