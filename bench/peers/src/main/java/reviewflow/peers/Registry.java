package reviewflow.peers;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;

/**
 * Writer schemas by id from a Confluent-compatible registry (GET /schemas/ids/{id}), each
 * fetched once. Confluent's own serdes are not served from Maven Central here.
 */
final class Registry {
    private final String base;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final ObjectMapper json = new ObjectMapper();
    private final Map<Integer, Schema> schemas = new ConcurrentHashMap<>();

    Registry(String base) {
        this.base = base.endsWith("/") ? base.substring(0, base.length() - 1) : base;
    }

    Schema schema(int id) {
        return schemas.computeIfAbsent(id, this::fetch);
    }

    private Schema fetch(int id) {
        URI uri = URI.create(base + "/schemas/ids/" + id);
        try {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(10)).build(),
                    HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                throw new PeerException("registry answered " + r.statusCode() + " for " + uri + ": " + r.body());
            }
            JsonNode schema = json.readTree(r.body()).get("schema");
            if (schema == null || !schema.isTextual()) {
                throw new PeerException("registry answer for " + uri + " has no \"schema\" string");
            }
            return new Schema.Parser().parse(schema.asText());
        } catch (java.io.IOException e) {
            throw new PeerException("cannot fetch schema " + id + " from " + uri + ": " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new PeerException("interrupted fetching " + uri, e);
        }
    }
}
