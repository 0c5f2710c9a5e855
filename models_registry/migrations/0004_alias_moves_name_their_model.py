"""Every alias move names its model (filled in by 0003; a migration of its own, as PostgreSQL cannot
alter a table with the deferred constraint checks of 0003's update pending)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("models_registry", "0003_alias_history_outlives_alias")]

    operations = [
        migrations.AlterField(
            model_name="aliasmove",
            name="model",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="alias_moves", to="models_registry.mlmodel"
            ),
        ),
    ]
