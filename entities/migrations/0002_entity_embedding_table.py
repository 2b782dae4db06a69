# The embedding moves out of the entity row into its own 1:1 table (see EntityEmbedding): counter
# updates of entity rows then no longer insert HNSW graph nodes.

import django.db.models.deletion
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("entities", "0001_initial"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="entity", name="entity_embedding_hnsw"),
        migrations.CreateModel(
            name="EntityEmbedding",
            fields=[
                (
                    "entity",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="embedding",
                        serialize=False,
                        to="entities.entity",
                    ),
                ),
                ("vector", pgvector.django.vector.VectorField(dimensions=1024)),
            ],
        ),
        migrations.RunSQL(
            "INSERT INTO entities_entityembedding (entity_id, vector)"
            " SELECT id, embedding FROM entities_entity WHERE embedding IS NOT NULL",
            reverse_sql="UPDATE entities_entity AS e SET embedding = v.vector"
            " FROM entities_entityembedding AS v WHERE v.entity_id = e.id",
        ),
        migrations.RemoveField(model_name="entity", name="embedding"),
        migrations.AddIndex(
            model_name="entityembedding",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["vector"],
                m=16,
                name="entity_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
    ]
