"""Alias moves keep their model and alias name, and outlive a deleted alias (whose deletion is a move to
no version)."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill(apps, schema_editor):
    AliasMove = apps.get_model("models_registry", "AliasMove")
    ModelAlias = apps.get_model("models_registry", "ModelAlias")
    aliases = ModelAlias.objects.filter(pk=OuterRef("alias_id"))
    AliasMove.objects.update(
        model_id=Subquery(aliases.values("model_id")[:1]), alias_name=Subquery(aliases.values("name")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [("models_registry", "0002_names_refuse_a_trailing_newline")]

    operations = [
        migrations.AddField(
            model_name="aliasmove",
            name="model",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="alias_moves",
                to="models_registry.mlmodel",
            ),
        ),
        migrations.AddField(
            model_name="aliasmove", name="alias_name", field=models.CharField(default="", max_length=40), preserve_default=False
        ),
        migrations.AlterField(
            model_name="aliasmove",
            name="alias",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="moves",
                to="models_registry.modelalias",
            ),
        ),
        migrations.AlterField(
            model_name="aliasmove",
            name="to_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="models_registry.modelversion",
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
