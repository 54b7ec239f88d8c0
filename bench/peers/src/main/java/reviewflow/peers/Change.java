package reviewflow.peers;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.serialization.Deserializer;

/**
 * One record of reviews.valid: the envelope's op and the two review images that matter to the
 * aggregation (course, rating in half stars, created_at). Wire format: magic 0, schema id
 * (4 bytes, big-endian), Avro binary under the writer schema from the registry.
 */
record Change(String op, Image before, Image after) {

    /** A review image: the rating in half stars (0.5 is 1, 5.0 is 10) and created_at in ms. */
    record Image(long courseId, int halves, long createdMs) {}

    static final class Decoder implements Deserializer<Change> {
        private final Registry registry;
        // Avro readers are cheap to keep and not meant to be shared between threads.
        private final ThreadLocal<Map<Integer, GenericDatumReader<GenericRecord>>> readers =
                ThreadLocal.withInitial(HashMap::new);
        private final ThreadLocal<BinaryDecoder> decoder = new ThreadLocal<>();

        Decoder(Registry registry) {
            this.registry = registry;
        }

        @Override
        public Change deserialize(String topic, byte[] data) {
            if (data == null || data.length < 5 || data[0] != 0) {
                throw new IllegalArgumentException("record of " + topic + " is not in the Confluent wire format");
            }
            int id = ByteBuffer.wrap(data, 1, 4).getInt();
            GenericDatumReader<GenericRecord> reader = readers.get()
                    .computeIfAbsent(id, i -> new GenericDatumReader<>(registry.schema(i)));
            BinaryDecoder d = DecoderFactory.get().binaryDecoder(data, 5, data.length - 5, decoder.get());
            decoder.set(d);
            try {
                GenericRecord envelope = reader.read(null, d);
                return new Change(envelope.get("op").toString(),
                        image((GenericRecord) envelope.get("before")),
                        image((GenericRecord) envelope.get("after")));
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("record of " + topic + " is not a change envelope: " + e, e);
            }
        }

        private static Image image(GenericRecord row) {
            if (row == null) {
                return null;
            }
            Object course = row.get("course_id");
            Object rating = row.get("rating");
            Object created = row.get("created_at");
            if (!(course instanceof Long c) || !(rating instanceof ByteBuffer r) || !(created instanceof Long t)) {
                throw new IllegalArgumentException("review image lacks course_id, rating or created_at: " + row);
            }
            BigDecimal value = new BigDecimal(new BigInteger(bytes(r)), scale(row.getSchema().getField("rating").schema()));
            return new Image(c, value.multiply(BigDecimal.valueOf(2)).intValueExact(), Math.floorDiv(t, 1000));
        }

        private static int scale(Schema field) {
            Schema s = field.getType() == Schema.Type.UNION
                    ? field.getTypes().stream().filter(b -> b.getType() != Schema.Type.NULL).findFirst().orElseThrow()
                    : field;
            LogicalType t = s.getLogicalType();
            if (!(t instanceof LogicalTypes.Decimal decimal)) {
                throw new IllegalArgumentException("rating is not an Avro decimal: " + s);
            }
            return decimal.getScale();
        }

        private static byte[] bytes(ByteBuffer b) {
            byte[] out = new byte[b.remaining()];
            b.duplicate().get(out);
            return out;
        }
    }
}
