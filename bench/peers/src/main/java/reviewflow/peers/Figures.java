package reviewflow.peers;

import java.nio.ByteBuffer;
import java.util.Locale;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The figures of one course in one window: count, rating sum in half stars and the star
 * histogram (half stars rounded down: 0.5 is zero stars, 1.0 and 1.5 one, ... 5.0 five), as the
 * stats worker keeps them. Mutable: the window store hands it back serialized on every update.
 */
final class Figures {
    long count;
    long halves;
    final long[] stars = new long[6];

    /** Adds (sign +1) or retracts (sign -1) one review image. */
    Figures add(Signed image) {
        count += image.sign();
        halves += (long) image.sign() * image.halves();
        stars[image.halves() / 2] += image.sign();
        return this;
    }

    String json(long courseId, long windowStartMs) {
        StringBuilder b = new StringBuilder(160);
        b.append("{\"course_id\":").append(courseId)
                .append(",\"window_start\":\"").append(java.time.Instant.ofEpochMilli(windowStartMs)).append('"')
                .append(",\"count\":").append(count)
                .append(",\"rating_avg\":")
                .append(count == 0 ? "null" : String.format(Locale.ROOT, "%.4f", halves / 2.0 / count))
                .append(",\"stars\":[");
        for (int i = 0; i < stars.length; i++) {
            b.append(i == 0 ? "" : ",").append(stars[i]);
        }
        return b.append("]}").toString();
    }

    /** One review image with its sign: +1 for `after`, -1 for `before`. */
    record Signed(long courseId, int halves, int sign) {}

    static Serde<Figures> serde() {
        Serializer<Figures> ser = (topic, f) -> {
            ByteBuffer b = ByteBuffer.allocate(8 * 8);
            b.putLong(f.count).putLong(f.halves);
            for (long s : f.stars) {
                b.putLong(s);
            }
            return b.array();
        };
        Deserializer<Figures> de = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            ByteBuffer b = ByteBuffer.wrap(bytes);
            Figures f = new Figures();
            f.count = b.getLong();
            f.halves = b.getLong();
            for (int i = 0; i < f.stars.length; i++) {
                f.stars[i] = b.getLong();
            }
            return f;
        };
        return Serdes.serdeFrom(ser, de);
    }

    static Serde<Signed> signedSerde() {
        Serializer<Signed> ser = (topic, s) -> ByteBuffer.allocate(16)
                .putLong(s.courseId()).putInt(s.halves()).putInt(s.sign()).array();
        Deserializer<Signed> de = (topic, bytes) -> {
            if (bytes == null) {
                return null;
            }
            ByteBuffer b = ByteBuffer.wrap(bytes);
            return new Signed(b.getLong(), b.getInt(), b.getInt());
        };
        return Serdes.serdeFrom(ser, de);
    }
}
